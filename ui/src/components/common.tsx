// Pieces every page uses: an error in words, a state badge, a confirmation dialog, a page title.
import { useEffect, useState, type ReactNode } from "react";
import { Link } from "react-router-dom";
import { Alert, Anchor, Badge, Button, Group, Modal, Stack, Text, Title } from "@mantine/core";
import { ApiError, errorText } from "../api/client";
import { STATUS_COLOR } from "../lib";

export function ErrorNote({ error }: { error: unknown }) {
  if (!error) return null;
  const p = error instanceof ApiError ? error.problem : undefined;
  return (
    <Alert color="red" role="alert" title={p?.title ?? "Error"} data-testid="error">
      <Text size="sm">{errorText(error)}</Text>
      {p?.locked_by && <Text size="sm">Locked by {p.locked_by}{p.locked_at ? ` since ${new Date(p.locked_at).toLocaleString()}` : ""}</Text>}
      {typeof p?.holder_job_id === "number" && <Anchor size="sm" component={Link} to={`/jobs/${p.holder_job_id}`}>Open the running job {p.holder_job_id}</Anchor>}
      {typeof p?.cooldown_until === "string" && <Text size="sm">Possible again after {new Date(p.cooldown_until).toLocaleString()}</Text>}
    </Alert>
  );
}

export function StateBadge({ value }: { value: string }) {
  // A coloured dot beside text in the body colour: readable (WCAG AA, axe checks it) in light and dark.
  return <Badge color={STATUS_COLOR[value] ?? "gray"} variant="dot">{value}</Badge>;
}

export function PageTitle({ children, actions }: { children: ReactNode; actions?: ReactNode }) {
  useEffect(() => { document.title = `${typeof children === "string" ? children : "Armillary"} · Armillary`; }, [children]);
  return (
    <Group justify="space-between" mb="md">
      <Title order={2}>{children}</Title>
      {actions}
    </Group>
  );
}

/** Ask before doing something with consequences; shows the error in the dialog if it fails. */
export function Confirm({ opened, title, children, confirmLabel, onCancel, onConfirm, danger }: {
  opened: boolean; title: string; children: ReactNode; confirmLabel: string; danger?: boolean;
  onCancel: () => void; onConfirm: () => Promise<void>;
}) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  useEffect(() => { if (opened) setError(undefined); }, [opened]);
  // Not kept in the page once closed: a fading dialog left behind is still read by screen readers (and axe).
  if (!opened) return null;
  return (
    <Modal opened={opened} onClose={onCancel} title={title} closeButtonProps={{ "aria-label": "Close" }}>
      <Stack>
        {children}
        <ErrorNote error={error} />
        <Group justify="flex-end">
          <Button variant="default" onClick={onCancel}>Cancel</Button>
          <Button color={danger ? "red" : undefined} loading={busy} onClick={async () => {
            setBusy(true);
            try { await onConfirm(); } catch (e) { setError(e); } finally { setBusy(false); }
          }}>{confirmLabel}</Button>
        </Group>
      </Stack>
    </Modal>
  );
}

/** Key/value text ("k=v, k2=v2") to an object, for label filters and selectors. */
export function parsePairs(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text.split(/[,\s]+/)) {
    const i = part.indexOf("=");
    if (i > 0) out[part.slice(0, i)] = part.slice(i + 1);
  }
  return out;
}

export function parseJson(text: string, what: string): Record<string, unknown> {
  if (!text.trim()) return {};
  try {
    const v = JSON.parse(text);
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not an object");
    return v;
  } catch (e) {
    throw new Error(`${what}: not a JSON object (${(e as Error).message})`);
  }
}
