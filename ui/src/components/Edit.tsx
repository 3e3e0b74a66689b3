// An edit form in a dialog (PATCH): the API's error for each field next to it, the problem above the button.
// Updates carry If-Match with the version the form was opened from, so a change made meanwhile by someone
// else is refused (412, "reload and retry") instead of silently overwritten.
import { useEffect, useState, type ReactNode } from "react";
import { Button, Group, Modal, Stack } from "@mantine/core";
import { ApiError } from "../api/client";
import { ErrorNote } from "./common";

export function EditModal({ opened, title, onClose, onSave, children }: {
  opened: boolean; title: string; onClose: () => void; onSave: () => Promise<void>; children: (error: unknown) => ReactNode;
}) {
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  useEffect(() => { if (opened) setError(undefined); }, [opened]);
  // Not kept in the page once closed: a fading dialog left behind is still read by screen readers (and axe).
  if (!opened) return null;
  return (
    <Modal opened={opened} onClose={onClose} title={title} size="lg" closeButtonProps={{ "aria-label": "Close" }}>
      <form onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        try { await onSave(); setError(undefined); } catch (err) { setError(err); } finally { setBusy(false); }
      }}>
        <Stack gap="xs">
          {children(error)}
          <ErrorNote error={error} />
          <Group justify="flex-end">
            <Button variant="default" onClick={onClose}>Cancel</Button>
            <Button type="submit" loading={busy}>Save</Button>
          </Group>
        </Stack>
      </form>
    </Modal>
  );
}

/** The If-Match header for an object read at `version`. */
export function ifMatch(version: number | undefined): Record<string, string> {
  return version === undefined ? {} : { "If-Match": `"${version}"` };
}

/** A JSON object typed into a field, or an error placed on that field (as the API would place its own). */
export function jsonField(text: string, field: string): Record<string, unknown> {
  if (!text.trim()) return {};
  let value: unknown;
  try { value = JSON.parse(text); } catch (e) { value = e; }
  if (typeof value !== "object" || value === null || Array.isArray(value) || value instanceof Error) {
    const message = value instanceof Error ? `not valid JSON: ${value.message}` : "must be a JSON object";
    throw new ApiError(422, { title: "Invalid input", detail: `${field}: ${message}`, errors: [{ field, message }] });
  }
  return value as Record<string, unknown>;
}

export const pretty = (v: unknown) => JSON.stringify(v ?? {}, null, 2);
