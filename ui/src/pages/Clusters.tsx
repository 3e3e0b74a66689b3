// Clusters: capacity at a glance (members against desired, min and max), and the create forms for a
// profile (the system template) and a cluster made from one.
import { useState } from "react";
import { Link, useNavigate } from "react-router-dom";
import { Anchor, Group, NumberInput, Progress, Select, Table, Text, TextInput, Tooltip } from "@mantine/core";
import { api, call, fieldError } from "../api/client";
import { useAuth } from "../auth";
import { ErrorNote, PageTitle, StateBadge, parsePairs } from "../components/common";
import { CreatePanel } from "../components/Form";
import { useRefs } from "../components/refs";
import { canWriteSomewhere, useLoad } from "../lib";

/** The job a 202 answered with (the API does not type the body of a started operation). */
export function jobIdOf(body: unknown): number | undefined {
  const b = body as { id?: number; job_id?: number } | undefined;
  return b?.job_id ?? b?.id;
}

export function CapacityBar({ members, desired, min, max }: { members: number; desired: number; min: number; max: number | null }) {
  const top = Math.max(max ?? 0, desired, members, 1);
  const label = `${members} of ${desired} desired (min ${min}, max ${max ?? "none"})`;
  return (
    <Tooltip label={label}>
      <div>
        <Progress.Root size="lg">
          <Progress.Section value={(Math.min(members, desired) / top) * 100} color="indigo" aria-label={`${members} members`} />
          {desired > members && <Progress.Section value={((desired - members) / top) * 100} color="gray.5" aria-label={`${desired - members} missing`} />}
          {members > desired && <Progress.Section value={((members - desired) / top) * 100} color="orange" aria-label={`${members - desired} above desired`} />}
        </Progress.Root>
        <Text size="xs">{label}</Text>
      </div>
    </Tooltip>
  );
}

export default function Clusters() {
  const { me } = useAuth();
  const navigate = useNavigate();
  const refs = useRefs();
  const list = useLoad(() => call(api.GET("/api/v1/clusters", { params: { query: { limit: 500 } } })), []);
  const profiles = useLoad(() => call(api.GET("/api/v1/profiles", { params: { query: { limit: 500 } } })), []);
  const [p, setP] = useState({ name: "", environment: "", hypervisor: "", type: "", cpu: 1, memory: "1G", labels: "" });
  const [c, setC] = useState({ name: "", profile: "", desired: 1, min: 0, max: "" as number | string });
  const writer = canWriteSomewhere(me);
  return (
    <>
      <PageTitle>Clusters</PageTitle>
      <ErrorNote error={list.error ?? profiles.error} />
      <Table striped>
        <Table.Thead><Table.Tr><Table.Th>Name</Table.Th><Table.Th>Environment</Table.Th><Table.Th>Profile</Table.Th>
          <Table.Th>Status</Table.Th><Table.Th w="35%">Capacity</Table.Th></Table.Tr></Table.Thead>
        <Table.Tbody>{(list.data?.items ?? []).map((x) => (
          <Table.Tr key={x.id}>
            <Table.Td><Anchor component={Link} to={`/clusters/${x.name}`}>{x.name}</Anchor></Table.Td>
            <Table.Td>{(x.environment as { name?: string }).name}</Table.Td>
            <Table.Td>{(x.profile as { name?: string }).name}</Table.Td>
            <Table.Td><StateBadge value={x.status} />{x.status_reason && <Text size="xs">{x.status_reason}</Text>}</Table.Td>
            <Table.Td><CapacityBar members={x.members} desired={x.desired} min={x.min} max={x.max ?? null} /></Table.Td>
          </Table.Tr>
        ))}</Table.Tbody>
      </Table>
      {list.data && list.data.items.length === 0 && <Text c="dimmed" size="sm" my="sm">No clusters yet.</Text>}
      {writer && (<Group align="flex-start" grow mt="md">
        <CreatePanel title="New cluster" onSubmit={async () => {
          const body = await call(api.POST("/api/v1/clusters", { body: {
            name: c.name, profile: c.profile, desired: Number(c.desired), min: Number(c.min),
            max: c.max === "" ? null : Number(c.max) } }));
          list.reload();
          const job = jobIdOf(body);
          navigate(job ? `/clusters/${c.name}?job=${job}` : `/clusters/${c.name}`);
        }}>{(err) => (<>
          <TextInput label="Cluster name" required value={c.name} onChange={(e) => setC({ ...c, name: e.currentTarget.value })} error={fieldError(err, "name")} />
          <Select label="Profile" required searchable data={(profiles.data?.items ?? []).map((x) => x.name)} value={c.profile || null}
            onChange={(v) => setC({ ...c, profile: v ?? "" })} error={fieldError(err, "profile")} />
          <Group grow>
            <NumberInput label="Desired" min={0} value={c.desired} onChange={(v) => setC({ ...c, desired: Number(v) })} error={fieldError(err, "desired")} />
            <NumberInput label="Min" min={0} value={c.min} onChange={(v) => setC({ ...c, min: Number(v) })} error={fieldError(err, "min")} />
            <NumberInput label="Max" min={0} value={c.max} placeholder="none" onChange={(v) => setC({ ...c, max: v })} error={fieldError(err, "max")} />
          </Group>
        </>)}</CreatePanel>
        <CreatePanel title="New profile" onSubmit={async () => {
          await call(api.POST("/api/v1/profiles", { body: {
            name: p.name, environment: p.environment, hypervisor: p.hypervisor || null, type: p.type || null,
            machine: { cpu: Number(p.cpu), memory: memoryOf(p.memory) }, labels: parsePairs(p.labels) } }));
          setP({ ...p, name: "" }); profiles.reload();
        }}>{(err) => (<>
          <TextInput label="Profile name" required value={p.name} onChange={(e) => setP({ ...p, name: e.currentTarget.value })} error={fieldError(err, "name")} />
          <Select label="Environment" required data={(refs.data?.envs ?? []).map((e) => e.name)} value={p.environment || null}
            onChange={(v) => setP({ ...p, environment: v ?? "" })} error={fieldError(err, "environment")} />
          <Select label="Hypervisor" clearable data={(refs.data?.hypervisors ?? []).filter((h) => !p.environment || h.environment.name === p.environment).map((h) => h.name)}
            value={p.hypervisor || null} onChange={(v) => setP({ ...p, hypervisor: v ?? "" })} error={fieldError(err, "hypervisor")} />
          <Select label="Type" clearable data={(refs.data?.types ?? []).map((t) => t.name)} value={p.type || null}
            onChange={(v) => setP({ ...p, type: v ?? "" })} error={fieldError(err, "type")} />
          <Group grow>
            <NumberInput label="CPUs" min={1} value={p.cpu} onChange={(v) => setP({ ...p, cpu: Number(v) })} error={fieldError(err, "machine.cpu")} />
            <TextInput label="Memory" value={p.memory} onChange={(e) => setP({ ...p, memory: e.currentTarget.value })} error={fieldError(err, "machine.memory")} />
          </Group>
          <TextInput label="Labels (k=v, k2=v2)" value={p.labels} onChange={(e) => setP({ ...p, labels: e.currentTarget.value })} error={fieldError(err, "labels")} />
        </>)}</CreatePanel>
      </Group>)}
    </>
  );
}

/** MiB as a number, or the text with its unit ("1G"): the API accepts both, its schema types only the number. */
function memoryOf(text: string): number | undefined {
  if (!text.trim()) return undefined;
  return (/^\d+$/.test(text.trim()) ? Number(text) : text.trim()) as unknown as number;
}
