// Findings of one system (its page) or of every system (the audits page): each check's outcome, newest first.
import { useState } from "react";
import { Link, useSearchParams } from "react-router-dom";
import { Anchor, Badge, Table, Text, TextInput } from "@mantine/core";
import { api, call } from "../api/client";
import { ErrorNote } from "./common";
import { useLoad, when } from "../lib";

/** Findings, newest first, of one system (or every system): each check's outcome, what changed, the evidence. */
export function Findings({ system, limit = 200 }: { system?: string; limit?: number }) {
  const [search] = useSearchParams();
  const run = Number(search.get("run")) || undefined;
  const [filter, setFilter] = useState(system ?? "");
  const findings = useLoad(() => call(api.GET("/api/v1/findings", { params: { query: { system: filter || undefined, run, limit } } })), [filter, run]);
  return (
    <>
      {system === undefined && <TextInput label="System (hostname or id)" w={300} mb="sm" defaultValue={filter}
        onKeyDown={(e) => { if (e.key === "Enter") setFilter(e.currentTarget.value.trim()); }} onBlur={(e) => setFilter(e.currentTarget.value.trim())} />}
      {run && <Text size="sm" mb="xs">Findings of run #{run}</Text>}
      <ErrorNote error={findings.error} />
      <Table striped>
        <Table.Thead><Table.Tr><Table.Th>When</Table.Th>{system === undefined && <Table.Th>System</Table.Th>}<Table.Th>Check</Table.Th><Table.Th>Outcome</Table.Th><Table.Th>Change</Table.Th><Table.Th>Summary</Table.Th></Table.Tr></Table.Thead>
        <Table.Tbody>{(findings.data?.items ?? []).map((x) => (
          <Table.Tr key={x.id}>
            <Table.Td>{when(x.started_at)}</Table.Td>
            {system === undefined && <Table.Td><Anchor component={Link} to={`/systems/${x.system.id}`}>{x.system.name}</Anchor></Table.Td>}
            <Table.Td>{x.check.name}</Table.Td>
            <Table.Td><Badge variant="dot" color={x.status === "pass" ? "green" : "red"}>{x.status}</Badge></Table.Td>
            <Table.Td>{x.change}</Table.Td>
            <Table.Td><Text size="sm" style={{ whiteSpace: "pre-wrap" }}>{x.summary}</Text></Table.Td>
          </Table.Tr>))}</Table.Tbody>
      </Table>
      {findings.data && findings.data.items.length === 0 && <Text c="dimmed" size="sm" my="sm">No findings.</Text>}
    </>
  );
}
