// The attention queue: systems an automatic fix could not repair, kicked out for a person. Assign to
// someone, acknowledge ("I'm on it"), comment, resolve with what was done. Every step is an event on the item.
import { useState } from "react";
import { Link } from "react-router-dom";
import { Anchor, Button, Group, SegmentedControl, Table, Text, TextInput, Textarea } from "@mantine/core";
import { api, call, type S } from "../api/client";
import { useAuth } from "../auth";
import { Confirm, ErrorNote, PageTitle, StateBadge } from "../components/common";
import { canWriteSomewhere, useLoad, when } from "../lib";

type Status = "unresolved" | "open" | "acknowledged" | "resolved";
type Item = S["AttentionOut"];
type Dialog = { item: Item; kind: "assign" | "ack" | "resolve" | "comment" } | null;

export default function Attention() {
  const { me } = useAuth();
  const [status, setStatus] = useState<Status>("unresolved");
  const list = useLoad(() => call(api.GET("/api/v1/attention", { params: { query: { status, limit: 200 } } })), [status]);
  const [dialog, setDialog] = useState<Dialog>(null);
  const [text, setText] = useState("");
  const writer = canWriteSomewhere(me);
  const open = (item: Item, kind: NonNullable<Dialog>["kind"]) => { setText(kind === "assign" ? item.assignee ?? me?.name ?? "" : ""); setDialog({ item, kind }); };

  async function submit() {
    if (!dialog) return;
    const path = { params: { path: { item_id: dialog.item.id } } };
    if (dialog.kind === "assign") await call(api.POST("/api/v1/attention/{item_id}/assign", { ...path, body: { assignee: text.trim() || null } }));
    if (dialog.kind === "ack") await call(api.POST("/api/v1/attention/{item_id}/ack", { ...path, body: { reason: text } }));
    if (dialog.kind === "comment") await call(api.POST("/api/v1/attention/{item_id}/comments", { ...path, body: { text } }));
    if (dialog.kind === "resolve") await call(api.POST("/api/v1/attention/{item_id}/resolve", { ...path, body: { resolution: text } }));
    setDialog(null); list.reload();
  }

  return (
    <>
      <PageTitle actions={<SegmentedControl aria-label="Show" value={status} onChange={(v) => setStatus(v as Status)}
        data={[{ value: "unresolved", label: "Unresolved" }, { value: "open", label: "Open" }, { value: "acknowledged", label: "Acknowledged" }, { value: "resolved", label: "Resolved" }]} />}>Attention queue</PageTitle>
      <ErrorNote error={list.error} />
      <Table striped>
        <Table.Thead><Table.Tr><Table.Th>System</Table.Th><Table.Th>Check</Table.Th><Table.Th>Why</Table.Th><Table.Th>Status</Table.Th>
          <Table.Th>Assignee</Table.Th><Table.Th>Since</Table.Th><Table.Th>History</Table.Th>{writer && <Table.Th>Actions</Table.Th>}</Table.Tr></Table.Thead>
        <Table.Tbody>{(list.data?.items ?? []).map((i) => (
          <Table.Tr key={i.id} data-testid={`attention-${i.id}`}>
            <Table.Td><Anchor component={Link} to={`/systems/${i.system.id}`}>{i.system.name}</Anchor></Table.Td>
            <Table.Td>{i.check?.name ?? "—"}</Table.Td>
            <Table.Td><Text size="sm" style={{ whiteSpace: "pre-wrap" }}>{i.reason}</Text>
              {i.job_id && <Anchor size="sm" component={Link} to={`/jobs/${i.job_id}`}>job {i.job_id}</Anchor>}</Table.Td>
            <Table.Td><StateBadge value={i.status} />
              {i.acknowledged_by && <Text size="xs">ack by {i.acknowledged_by}, {when(i.acknowledged_at)}</Text>}
              {i.resolved_by && <Text size="xs">resolved by {i.resolved_by}: {i.resolution}</Text>}</Table.Td>
            <Table.Td>{i.assignee ?? "—"}</Table.Td>
            <Table.Td>{when(i.created_at)}</Table.Td>
            <Table.Td>{i.events.slice(-3).map((e) => <Text key={e.id} size="xs">{when(e.at)} {e.actor ?? "system"} {e.kind}{e.text ? `: ${e.text}` : ""}</Text>)}</Table.Td>
            {writer && <Table.Td>{i.status !== "resolved" && (
              <Group gap={4} wrap="nowrap">
                <Button size="compact-xs" variant="default" onClick={() => open(i, "assign")} aria-label={`Assign ${i.system.name}`}>Assign</Button>
                {i.status === "open" && <Button size="compact-xs" variant="default" onClick={() => open(i, "ack")} aria-label={`Acknowledge ${i.system.name}`}>Acknowledge</Button>}
                <Button size="compact-xs" variant="default" onClick={() => open(i, "comment")} aria-label={`Comment on ${i.system.name}`}>Comment</Button>
                <Button size="compact-xs" onClick={() => open(i, "resolve")} aria-label={`Resolve ${i.system.name}`}>Resolve</Button>
              </Group>)}</Table.Td>}
          </Table.Tr>
        ))}</Table.Tbody>
      </Table>
      {list.data && list.data.items.length === 0 && <Text c="dimmed" size="sm" my="sm">Nothing here: every system a fix could not repair has been dealt with.</Text>}
      <Confirm opened={!!dialog} onCancel={() => setDialog(null)} onConfirm={submit}
        title={dialog ? `${{ assign: "Assign", ack: "Acknowledge", comment: "Comment on", resolve: "Resolve" }[dialog.kind]} ${dialog.item.system.name}` : ""}
        confirmLabel={dialog ? { assign: "Assign", ack: "Acknowledge", comment: "Add comment", resolve: "Resolve" }[dialog.kind] : "OK"}>
        {dialog?.kind === "assign" && <TextInput label="Assignee (a username; empty to unassign)" value={text} onChange={(e) => setText(e.currentTarget.value)} />}
        {dialog?.kind === "ack" && <TextInput label="Note (optional)" value={text} onChange={(e) => setText(e.currentTarget.value)} />}
        {dialog?.kind === "comment" && <Textarea label="Comment" required value={text} onChange={(e) => setText(e.currentTarget.value)} />}
        {dialog?.kind === "resolve" && <Textarea label="What was done" required value={text} onChange={(e) => setText(e.currentTarget.value)} />}
      </Confirm>
    </>
  );
}
