// A create form in a panel: fields, the API's error for each field next to it, the whole problem above the button.
import { useState, type ReactNode } from "react";
import { Button, Paper, Stack, Title } from "@mantine/core";
import { ErrorNote } from "./common";

export function CreatePanel({ title, onSubmit, children, submitLabel = "Create" }: {
  title: string; submitLabel?: string; children: (error: unknown) => ReactNode; onSubmit: () => Promise<void>;
}) {
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  return (
    <Paper withBorder p="md" mb="md" component="section" aria-label={title}>
      <form onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        try { await onSubmit(); setError(undefined); } catch (err) { setError(err); } finally { setBusy(false); }
      }}>
        <Stack gap="xs">
          <Title order={3} size="h5">{title}</Title>
          {children(error)}
          <ErrorNote error={error} />
          <Button type="submit" loading={busy} w="fit-content">{submitLabel}</Button>
        </Stack>
      </form>
    </Paper>
  );
}
