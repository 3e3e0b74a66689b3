// Stacks: every stack with its status (and why), how many resources it holds and how many drifted at the
// last check; keyset paging like the other lists; "New stack" opens the template editor.
import { useState } from "react";
import { Link, useNavigate } from "react-router-dom";
import { Anchor, Badge, Button, Group, Select, Table, Text } from "@mantine/core";
import { api, call, cursorOf } from "../api/client";
import { useAuth } from "../auth";
import { ErrorNote, PageTitle } from "../components/common";
import { useRefs } from "../components/refs";
import { STATUS_COLOR, useLoad, when } from "../lib";

export const STACK_STATUSES = ["new", "applying", "complete", "failed", "checking", "drifted", "deleting", "rolling_back",
  "rolled_back", "rollback_failed"];

// A stack's statuses beside those of systems and jobs (lib's STATUS_COLOR).
const STACK_COLOR: Record<string, string> = { ...STATUS_COLOR, complete: "green", applying: "blue", checking: "blue",
  drifted: "orange", deleting: "orange", new: "gray", rolling_back: "orange", rolled_back: "yellow", rollback_failed: "red" };

export function StackStatus({ value }: { value: string }) {
  return <Badge color={STACK_COLOR[value] ?? "gray"} variant="dot">{value}</Badge>;
}

export default function Stacks() {
  const { me } = useAuth();
  const navigate = useNavigate();
  const refs = useRefs();
  const [env, setEnv] = useState<string | null>(null);
  const [status, setStatus] = useState<string | null>(null);
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const cursor = cursors[cursors.length - 1];
  const page = useLoad(() => call(api.GET("/api/v1/stacks", { params: { query: {
    environment: env ?? undefined, status: status ?? undefined, limit: 50, cursor } } })), [env, status, cursor]);
  const operator = !!me && (me.admin || me.roles.some((r) => r.role === "operator"));
  return (
    <>
      <PageTitle actions={operator && <Button size="xs" onClick={() => navigate("/stacks/new")}>New stack</Button>}>Stacks</PageTitle>
      <Group mb="sm" align="flex-end">
        <Select label="Environment" clearable w={200} data={(refs.data?.envs ?? []).map((e) => e.name)} value={env}
          onChange={(v) => { setEnv(v); setCursors([undefined]); }} />
        <Select label="Status" clearable w={180} data={STACK_STATUSES} value={status}
          onChange={(v) => { setStatus(v); setCursors([undefined]); }} />
      </Group>
      <ErrorNote error={page.error} />
      <Table striped>
        <Table.Thead><Table.Tr><Table.Th>Name</Table.Th><Table.Th>Environment</Table.Th><Table.Th>Status</Table.Th>
          <Table.Th>Resources</Table.Th><Table.Th>Drifted</Table.Th><Table.Th>Last job</Table.Th><Table.Th>Updated</Table.Th></Table.Tr></Table.Thead>
        <Table.Tbody>{(page.data?.items ?? []).map((s) => (
          <Table.Tr key={s.id} data-testid="stack-row">
            <Table.Td><Anchor component={Link} to={`/stacks/${s.name}`}>{s.name}</Anchor>
              {s.description && <Text size="xs" c="dimmed">{s.description}</Text>}</Table.Td>
            <Table.Td>{(s.environment as { name?: string }).name}</Table.Td>
            <Table.Td><StackStatus value={s.status} />{s.status_reason && <Text size="xs">{s.status_reason}</Text>}</Table.Td>
            <Table.Td>{s.resources}</Table.Td>
            <Table.Td>{Object.keys(s.drift).length || "—"}</Table.Td>
            <Table.Td>{s.running_job_id ?? s.last_job_id
              ? <Anchor component={Link} to={`/jobs/${s.running_job_id ?? s.last_job_id}`}>#{s.running_job_id ?? s.last_job_id}</Anchor> : "—"}</Table.Td>
            <Table.Td>{when(s.updated_at)}</Table.Td>
          </Table.Tr>
        ))}</Table.Tbody>
      </Table>
      {page.data && page.data.items.length === 0 && <Text c="dimmed" size="sm" my="sm">No stacks{env || status ? " match" : " yet"}.</Text>}
      <Group mt="sm">
        <Button variant="default" disabled={cursors.length < 2} onClick={() => setCursors(cursors.slice(0, -1))}>Previous</Button>
        <Button variant="default" disabled={!page.data?.next} onClick={() => setCursors([...cursors, cursorOf(page.data?.next)])}>Next</Button>
      </Group>
    </>
  );
}
