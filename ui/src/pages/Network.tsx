import { Badge, Paper, Progress, Table, Text, Title } from "@mantine/core";
import { api, call } from "../api/client";
import { ErrorNote, PageTitle } from "../components/common";
import { useLoad } from "../lib";

export default function Network() {
  const pools = useLoad(() => call(api.GET("/api/v1/ip-pools", { params: { query: { limit: 1000 } } })), []);
  const zones = useLoad(() => call(api.GET("/api/v1/dns-zones", { params: { query: { limit: 1000 } } })), []);
  return (
    <>
      <PageTitle>IP pools &amp; DNS zones</PageTitle>
      <Text size="sm" c="dimmed" mb="sm">Create and change pools and zones with <code>armillary ip-pool</code> / <code>armillary dns</code> (docs/network.md).</Text>
      <ErrorNote error={pools.error ?? zones.error} />
      <Paper withBorder p="sm" mb="md">
        <Title order={3} size="h5" mb="xs">IP pools</Title>
        <Table><Table.Thead><Table.Tr><Table.Th>Name</Table.Th><Table.Th>Environment</Table.Th><Table.Th>CIDR</Table.Th><Table.Th>Range</Table.Th><Table.Th>Used</Table.Th></Table.Tr></Table.Thead>
          <Table.Tbody>{(pools.data?.items ?? []).map((p) => {
            const u = (p as unknown as { utilization?: { used: number; size: number; percent: number } }).utilization;
            return (
              <Table.Tr key={p.id}><Table.Td>{p.name}</Table.Td><Table.Td>{p.environment.name}</Table.Td><Table.Td>{p.cidr}</Table.Td>
                <Table.Td>{p.range_start} – {p.range_end}</Table.Td>
                <Table.Td>{u ? <><Text size="xs">{u.used} of {u.size}</Text><Progress value={u.percent} aria-label={`${p.name} utilization`} /></> : "—"}</Table.Td></Table.Tr>
            );
          })}</Table.Tbody></Table>
        {pools.data?.items.length === 0 && <Text size="sm" c="dimmed">No pools.</Text>}
      </Paper>
      <Paper withBorder p="sm">
        <Title order={3} size="h5" mb="xs">DNS zones</Title>
        <Table><Table.Thead><Table.Tr><Table.Th>Zone</Table.Th><Table.Th>Environment</Table.Th><Table.Th>Backend</Table.Th><Table.Th>TTL</Table.Th><Table.Th>Secrets</Table.Th></Table.Tr></Table.Thead>
          <Table.Tbody>{(zones.data?.items ?? []).map((z) => (
            <Table.Tr key={z.id}><Table.Td>{z.name}{z.reverse ? " (reverse)" : ""}</Table.Td><Table.Td>{z.environment.name}</Table.Td><Table.Td>{z.backend}</Table.Td>
              <Table.Td>{z.ttl}</Table.Td><Table.Td>{z.secrets_set.map((s) => <Badge key={s} variant="light" mr={4} autoContrast>{s}: set</Badge>)}</Table.Td></Table.Tr>
          ))}</Table.Tbody></Table>
        {zones.data?.items.length === 0 && <Text size="sm" c="dimmed">No zones.</Text>}
      </Paper>
    </>
  );
}
