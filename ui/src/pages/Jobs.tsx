import { useState } from "react";
import { Link } from "react-router-dom";
import { Anchor, Button, Group, Select, Table } from "@mantine/core";
import { api, call, cursorOf } from "../api/client";
import { ErrorNote, PageTitle, StateBadge } from "../components/common";
import { useLoad, when } from "../lib";

export default function Jobs() {
  const [status, setStatus] = useState<string | null>(null);
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const cursor = cursors[cursors.length - 1];
  const page = useLoad(() => call(api.GET("/api/v1/jobs", { params: { query: { status: status ?? undefined, limit: 50, cursor } } })), [status, cursor]);
  return (
    <>
      <PageTitle>Jobs</PageTitle>
      <Select label="Status" clearable w={180} mb="sm" data={["queued", "pending", "running", "succeeded", "failed", "cancelled"]}
        value={status} onChange={(v) => { setStatus(v); setCursors([undefined]); }} />
      <ErrorNote error={page.error} />
      <Table striped><Table.Thead><Table.Tr><Table.Th>Job</Table.Th><Table.Th>Action</Table.Th><Table.Th>Status</Table.Th><Table.Th>Target</Table.Th><Table.Th>By</Table.Th><Table.Th>Created</Table.Th></Table.Tr></Table.Thead>
        <Table.Tbody>{(page.data?.items ?? []).map((j) => (
          <Table.Tr key={j.id}><Table.Td><Anchor component={Link} to={`/jobs/${j.id}`}>#{j.id}</Anchor></Table.Td><Table.Td>{j.action}</Table.Td>
            <Table.Td><StateBadge value={j.status} /></Table.Td>
            <Table.Td>{j.system_id ? <Anchor component={Link} to={`/systems/${j.system_id}`}>system #{j.system_id}</Anchor> : "bulk"}</Table.Td>
            <Table.Td>{j.actor ?? "—"}</Table.Td><Table.Td>{when(j.created_at)}</Table.Td></Table.Tr>
        ))}</Table.Tbody></Table>
      <Group mt="sm">
        <Button variant="default" disabled={cursors.length < 2} onClick={() => setCursors(cursors.slice(0, -1))}>Previous</Button>
        <Button variant="default" disabled={!page.data?.next} onClick={() => setCursors([...cursors, cursorOf(page.data?.next)])}>Next</Button>
      </Group>
    </>
  );
}
