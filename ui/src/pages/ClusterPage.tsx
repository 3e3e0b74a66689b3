// One cluster: capacity, members, attached policies, receivers, the running (or last) operation's job,
// and the operations that change its size. A refusal is a problem shown in words: 409 while busy
// (naming the job) or cooling down (until when), 422 naming the bound a new size would cross.
import { useState } from "react";
import { Link, useNavigate, useParams, useSearchParams } from "react-router-dom";
import { Anchor, Badge, Button, Checkbox, Code, Group, NumberInput, Paper, SegmentedControl, SimpleGrid, Table, Tabs, Text, TextInput, Title } from "@mantine/core";
import { api, call } from "../api/client";
import { useAuth } from "../auth";
import { Confirm, ErrorNote, PageTitle, StateBadge } from "../components/common";
import { roleIn, useLoad, when } from "../lib";
import { CapacityBar, jobIdOf } from "./Clusters";

type Op = "scale-out" | "scale-in" | "resize" | "update-profile" | null;

export default function ClusterPage() {
  const { name = "" } = useParams();
  const [search] = useSearchParams();
  const navigate = useNavigate();
  const { me } = useAuth();
  const path = { params: { path: { ref: name } } };
  const cluster = useLoad(() => call(api.GET("/api/v1/clusters/{ref}", path)), [name]);
  const members = useLoad(() => call(api.GET("/api/v1/clusters/{ref}/members", path)), [name]);
  const receivers = useLoad(async () => (await call(api.GET("/api/v1/receivers", { params: { query: { limit: 500 } } }))).items
    .filter((r) => (r.cluster as { name?: string }).name === name), [name]);
  const [op, setOp] = useState<Op>(null);
  const [count, setCount] = useState<number | string>(1);
  const [mode, setMode] = useState<"exact" | "change" | "percent">("exact");
  const [number, setNumber] = useState<number | string>(1);
  const [min, setMin] = useState<number | string>("");
  const [max, setMax] = useState<number | string>("");
  const [strict, setStrict] = useState(true);
  const [rollProfile, setRollProfile] = useState("");
  const [batch, setBatch] = useState<number | string>(1);
  const [inService, setInService] = useState<number | string>(0);
  const [pause, setPause] = useState<number | string>(0);
  const [opError, setOpError] = useState<unknown>();
  const c = cluster.data;
  const envId = (c?.environment as { id?: number } | undefined)?.id;
  const mayAct = !!c && (me?.admin || ["operator", "user"].includes(roleIn(me, envId ?? -1) ?? ""));
  const jobId = c?.running_job_id ?? (Number(search.get("job")) || undefined) ?? c?.last_job_id ?? undefined;
  const reload = () => { cluster.reload(); members.reload(); };

  async function start() {
    const body = op === "update-profile"
      ? await call(api.POST("/api/v1/clusters/{ref}/update-profile", { ...path, body: {
          profile: rollProfile.trim() || null, max_batch_size: Number(batch || 1),
          min_in_service: Number(inService || 0), pause_seconds: Number(pause || 0) } }))
      : op === "resize"
      ? await call(api.POST("/api/v1/clusters/{ref}/resize", { ...path, body: {
          adjustment_type: mode, number: number === "" ? null : Number(number), strict,
          min: min === "" ? null : Number(min), max: max === "" ? null : Number(max) } }))
      : await call(api.POST(op === "scale-out" ? "/api/v1/clusters/{ref}/scale-out" : "/api/v1/clusters/{ref}/scale-in",
          { ...path, body: { count: count === "" ? null : Number(count) } }));
    setOp(null);
    const job = jobIdOf(body);
    reload();
    if (job) navigate(`/clusters/${name}?job=${job}`, { replace: true });
  }

  return (
    <>
      <PageTitle actions={mayAct && (
        <Group gap="xs">
          <Button size="xs" onClick={() => { setCount(1); setOp("scale-out"); }}>Scale out</Button>
          <Button size="xs" variant="default" onClick={() => { setCount(1); setOp("scale-in"); }}>Scale in</Button>
          <Button size="xs" variant="default" onClick={() => { setNumber(c?.desired ?? 1); setMin(""); setMax(""); setOp("resize"); }}>Resize</Button>
          <Button size="xs" variant="default" onClick={() => {
            setRollProfile((c?.profile as { name?: string } | undefined)?.name ?? ""); setBatch(1); setInService(0); setPause(0);
            setOp("update-profile");
          }}>Update profile</Button>
          <Button size="xs" variant="default" onClick={reload}>Refresh</Button>
        </Group>)}>{`Cluster ${name}`}</PageTitle>
      <ErrorNote error={cluster.error ?? opError} />
      {c && (<>
        <SimpleGrid cols={{ base: 1, md: 2 }} mb="md">
          <Paper withBorder p="sm">
            <Title order={3} size="h5" mb="xs">Capacity</Title>
            <CapacityBar members={c.members} desired={c.desired} min={c.min} max={c.max ?? null} />
            <Text size="sm" mt="xs" data-testid="cluster-size">members {c.members} · active {c.active_members} · desired {c.desired} · min {c.min} · max {c.max ?? "none"}</Text>
            <Group gap="xs" mt="xs"><Text size="sm">Status</Text><StateBadge value={c.status} /><Text size="sm">{c.status_reason}</Text></Group>
          </Paper>
          <Paper withBorder p="sm">
            <Title order={3} size="h5" mb="xs">Operation</Title>
            {jobId
              ? <Text size="sm">{c.running_job_id ? "Running: " : "Last: "}<Anchor component={Link} to={`/jobs/${jobId}`} data-testid="cluster-job">job {jobId}</Anchor> (live log, steps and per-member results)</Text>
              : <Text size="sm" c="dimmed">No operation yet.</Text>}
            <Text size="sm" mt="xs">Profile: {(c.profile as { name?: string }).name} · environment {(c.environment as { name?: string }).name} · owner {c.owner ?? "—"}</Text>
            <Text size="sm">Created {when(c.created_at)} · updated {when(c.updated_at)}</Text>
          </Paper>
        </SimpleGrid>
        <Tabs defaultValue="members">
          <Tabs.List>
            <Tabs.Tab value="members">Members ({c.members})</Tabs.Tab>
            <Tabs.Tab value="policies">Policies ({c.policies.length})</Tabs.Tab>
            <Tabs.Tab value="receivers">Receivers ({receivers.data?.length ?? "…"})</Tabs.Tab>
          </Tabs.List>
          <Tabs.Panel value="members" pt="sm">
            <ErrorNote error={members.error} />
            <Table striped><Table.Thead><Table.Tr><Table.Th>#</Table.Th><Table.Th>Hostname</Table.Th><Table.Th>State</Table.Th><Table.Th>Hypervisor</Table.Th><Table.Th>Profile (revision)</Table.Th><Table.Th>Joined</Table.Th><Table.Th>Health</Table.Th></Table.Tr></Table.Thead>
              <Table.Tbody>{(members.data ?? []).map((m) => (
                <Table.Tr key={m.system_id}>
                  <Table.Td>{m.index}</Table.Td>
                  <Table.Td><Anchor component={Link} to={`/systems/${m.system_id}`}>{m.hostname}</Anchor></Table.Td>
                  <Table.Td><StateBadge value={m.state} /></Table.Td>
                  <Table.Td>{m.hypervisor ?? "—"}</Table.Td>
                  <Table.Td data-testid="member-profile">{m.profile ? `${m.profile} (${m.profile_revision})` : "adopted"}</Table.Td>
                  <Table.Td>{when(m.joined_at)}</Table.Td>
                  <Table.Td>{m.needs_attention ? <Badge color="red" autoContrast>needs attention</Badge> : m.failed_recoveries ? `${m.failed_recoveries} failed recoveries` : "ok"}</Table.Td>
                </Table.Tr>))}</Table.Tbody></Table>
          </Tabs.Panel>
          <Tabs.Panel value="policies" pt="sm">
            <Table><Table.Thead><Table.Tr><Table.Th>Policy</Table.Th><Table.Th>Details</Table.Th></Table.Tr></Table.Thead>
              <Table.Tbody>{c.policies.map((b, i) => {
                const { name: policyName, ...rest } = b as { name?: string; [k: string]: unknown };
                return <Table.Tr key={i}><Table.Td>{policyName ?? "—"}</Table.Td><Table.Td><Code>{JSON.stringify(rest)}</Code></Table.Td></Table.Tr>;
              })}</Table.Tbody></Table>
            {c.policies.length === 0 && <Text size="sm" c="dimmed">No policies attached (`armillary clusters policy attach`, or POST /clusters/{name}/policies).</Text>}
          </Tabs.Panel>
          <Tabs.Panel value="receivers" pt="sm">
            <Table><Table.Thead><Table.Tr><Table.Th>Receiver</Table.Th><Table.Th>Operation</Table.Th><Table.Th>URL</Table.Th><Table.Th>Rate limit</Table.Th><Table.Th>Last triggered</Table.Th></Table.Tr></Table.Thead>
              <Table.Tbody>{(receivers.data ?? []).map((r) => (
                <Table.Tr key={r.id}><Table.Td>{r.name}</Table.Td><Table.Td>{r.operation} <Code>{JSON.stringify(r.params)}</Code></Table.Td>
                  <Table.Td><Code>{r.url}</Code></Table.Td><Table.Td>{r.rate_limit}</Table.Td><Table.Td>{when(r.last_triggered_at)}</Table.Td></Table.Tr>))}</Table.Tbody></Table>
          </Tabs.Panel>
        </Tabs>
      </>)}
      <Confirm opened={op !== null}
        title={op === "update-profile" ? `Update the profile of ${name}` : op === "resize" ? `Resize ${name}` : `${op === "scale-out" ? "Scale out" : "Scale in"} ${name}`}
        confirmLabel={op === "update-profile" ? "Start rolling update" : op === "resize" ? "Resize" : op === "scale-out" ? "Add members" : "Remove members"} danger={op === "scale-in"}
        onCancel={() => setOp(null)} onConfirm={async () => { setOpError(undefined); await start(); }}>
        {op === "update-profile" ? (<>
          <Text size="sm">Members made from another profile or an older revision are replaced batch after batch: new members first, the old ones destroyed once the new ones run (old first when the quota or max leaves no room). A failing batch stops the rollout.</Text>
          <TextInput label="Profile" description="The cluster's own, or another profile of its environment" value={rollProfile} onChange={(e) => setRollProfile(e.currentTarget.value)} />
          <Group grow>
            <NumberInput label="Max batch size" min={1} value={batch} onChange={setBatch} />
            <NumberInput label="Min in service" min={0} value={inService} onChange={setInService} />
            <NumberInput label="Pause (seconds)" min={0} value={pause} onChange={setPause} />
          </Group>
        </>) : <Text size="sm">Now {c?.members} members, desired {c?.desired} (min {c?.min}, max {c?.max ?? "none"}). The cluster's policies decide which members go and where new ones are placed.</Text>}
        {(op === "scale-out" || op === "scale-in") && <NumberInput label="How many" min={1} value={count} onChange={setCount} />}
        {op === "resize" && (<>
          <SegmentedControl aria-label="Adjustment" value={mode} onChange={(v) => setMode(v as typeof mode)}
            data={[{ value: "exact", label: "Exact size" }, { value: "change", label: "Change by" }, { value: "percent", label: "Percent" }]} />
          <NumberInput label={mode === "exact" ? "New desired size" : mode === "change" ? "Change (+/-)" : "Percent (+/-)"} value={number} onChange={setNumber} />
          <Group grow>
            <NumberInput label="New min" placeholder="unchanged" min={0} value={min} onChange={setMin} />
            <NumberInput label="New max" placeholder="unchanged" min={0} value={max} onChange={setMax} />
          </Group>
          <Checkbox label="Strict: refuse a size beyond the bounds (else clamp to them)" checked={strict} onChange={(e) => setStrict(e.currentTarget.checked)} />
        </>)}
      </Confirm>
    </>
  );
}
