import { useState } from "react";
import { Button, Code, Group, Select, Table, TextInput } from "@mantine/core";
import { api, call, cursorOf } from "../api/client";
import { ErrorNote, PageTitle } from "../components/common";
import { useLoad, when } from "../lib";

export default function Audit() {
  const [user, setUser] = useState("");
  const [outcome, setOutcome] = useState<string | null>(null);
  const [method, setMethod] = useState<string | null>(null);
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const cursor = cursors[cursors.length - 1];
  const page = useLoad(() => call(api.GET("/api/v1/audit", { params: { query: {
    user: user || undefined, outcome: outcome ?? undefined, method: method ?? undefined, limit: 50, cursor } } })), [user, outcome, method, cursor]);
  const reset = () => setCursors([undefined]);
  return (
    <>
      <PageTitle>Audit trail</PageTitle>
      <Group mb="sm" align="flex-end">
        <TextInput label="User" defaultValue={user} onBlur={(e) => { setUser(e.currentTarget.value.trim()); reset(); }} />
        <Select label="Outcome" clearable data={["success", "denied", "error", "invalid"]} value={outcome} onChange={(v) => { setOutcome(v); reset(); }} />
        <Select label="Method" clearable data={["GET", "POST", "PUT", "PATCH", "DELETE"]} value={method} onChange={(v) => { setMethod(v); reset(); }} />
      </Group>
      <ErrorNote error={page.error} />
      <Table striped><Table.Thead><Table.Tr><Table.Th>When</Table.Th><Table.Th>Who</Table.Th><Table.Th>Request</Table.Th><Table.Th>Status</Table.Th><Table.Th>Outcome</Table.Th><Table.Th>Detail</Table.Th></Table.Tr></Table.Thead>
        <Table.Tbody>{(page.data?.items ?? []).map((a) => (
          <Table.Tr key={a.id}><Table.Td>{when(a.at)}</Table.Td><Table.Td>{a.username ?? "—"}</Table.Td><Table.Td>{a.method} {a.path}</Table.Td>
            <Table.Td>{a.status}</Table.Td><Table.Td>{a.outcome}</Table.Td><Table.Td><Code>{JSON.stringify(a.detail)}</Code></Table.Td></Table.Tr>
        ))}</Table.Tbody></Table>
      <Group mt="sm">
        <Button variant="default" disabled={cursors.length < 2} onClick={() => setCursors(cursors.slice(0, -1))}>Previous</Button>
        <Button variant="default" disabled={!page.data?.next} onClick={() => setCursors([...cursors, cursorOf(page.data?.next)])}>Next</Button>
      </Group>
    </>
  );
}
