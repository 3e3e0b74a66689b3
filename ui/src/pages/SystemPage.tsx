// One system: properties, labels, resolved variables with their origin, addresses, releases (rollback),
// jobs, audit history, and the actions its state allows (the others disabled, saying why).
import { useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { Anchor, Badge, Button, Code, Group, SimpleGrid, Table, Tabs, Text, Tooltip, Paper, Title } from "@mantine/core";
import { api, call, type S } from "../api/client";
import { useAuth } from "../auth";
import { Confirm, ErrorNote, PageTitle, StateBadge } from "../components/common";
import { ACTIONS, canAct, useLoad, when, whyNot } from "../lib";
import { SystemEdit } from "../components/Editors";
import { Findings } from "../components/Findings";

export default function SystemPage() {
  const { id = "" } = useParams();
  const { me } = useAuth();
  const navigate = useNavigate();
  const [editing, setEditing] = useState(false);
  const [pending, setPending] = useState<{ action: S["ActionRequest"]["action"]; params?: Record<string, unknown> } | null>(null);
  const sys = useLoad(() => call(api.GET("/api/v1/systems/{ref}", { params: { path: { ref: id } } })), [id]);
  const vars = useLoad(() => call(api.GET("/api/v1/systems/{ref}/variables", { params: { path: { ref: id } } })), [id]);
  const sysId = sys.data?.id;
  const jobs = useLoad(async () => sysId ? call(api.GET("/api/v1/jobs", { params: { query: { system: sysId, limit: 20 } } })) : undefined, [sysId]);
  const releases = useLoad(() => call(api.GET("/api/v1/systems/{ref}/releases", { params: { path: { ref: id } } })), [id]);
  const audit = useLoad(async () => me?.admin
    ? call(api.GET("/api/v1/audit", { params: { query: { resource_type: "system", resource_id: id, limit: 20 } } }))
    : undefined, [id, me?.admin]);
  const s = sys.data;
  if (!s) return <><ErrorNote error={sys.error} />{sys.loading && <Text>Loading…</Text>}</>;
  const acts = canAct(me, s);

  return (
    <>
      <PageTitle actions={<StateBadge value={s.state} />}>{s.hostname}</PageTitle>
      {acts && (
        <Group mb="md" gap="xs" aria-label="Actions" role="group">
          <Button size="xs" variant="default" onClick={() => setEditing(true)}>Edit</Button>
          {ACTIONS.filter((a) => a !== "clone").map((a) => {
            const why = whyNot(a, s.state);
            const button = <Button key={a} size="xs" variant={a === "destroy" ? "outline" : "light"} color={a === "destroy" ? "red" : undefined}
              disabled={!!why} onClick={() => setPending({ action: a })}>{a}</Button>;
            return why ? <Tooltip key={a} label={why}><span tabIndex={0} aria-label={`${a}: ${why}`}>{button}</span></Tooltip> : button;
          })}
        </Group>
      )}
      <SystemEdit item={editing ? s : null} onClose={() => setEditing(false)} onSaved={() => { setEditing(false); sys.reload(); vars.reload(); }} />
      <Confirm opened={!!pending} title={`${pending?.action} ${s.hostname}`} confirmLabel={pending?.action ?? ""}
        danger={pending?.action === "destroy"} onCancel={() => setPending(null)}
        onConfirm={async () => {
          const job = await call(api.POST("/api/v1/systems/{ref}/actions", {
            params: { path: { ref: String(s.id) } }, body: { action: pending!.action, params: pending!.params ?? {} } }));
          setPending(null);
          navigate(`/jobs/${job.id}`);
        }}>
        <Text>Start <b>{pending?.action}</b> on {s.hostname}{pending?.params?.release ? ` to release ${String(pending.params.release)}` : ""}?</Text>
      </Confirm>

      <SimpleGrid cols={{ base: 1, md: 2 }} mb="md">
        <Paper withBorder p="sm">
          <Title order={3} size="h5" mb="xs">Properties</Title>
          <Table><Table.Tbody>
            {([
              ["Environment", s.environment.name], ["Hypervisor", s.hypervisor?.name ?? "—"], ["Driver", s.driver_name ?? "—"],
              ["Type", s.type?.name ?? "—"], ["Owner", s.owner ?? "—"], ["User", s.machine.user ?? "—"], ["OS", s.machine.os ?? "—"],
              ["CPU", s.machine.cpu ?? "—"], ["Memory", s.machine.memory ? `${s.machine.memory} MiB` : "—"],
              ["Disk", s.machine.disk ? `${s.machine.disk} GiB` : "—"], ["Addresses", (s.machine.addresses ?? []).join(", ") || "—"],
              ["Updated", when(s.updated_at)],
            ] as [string, unknown][]).map(([k, v]) => <Table.Tr key={k}><Table.Th w={120}>{k}</Table.Th><Table.Td>{String(v)}</Table.Td></Table.Tr>)}
          </Table.Tbody></Table>
        </Paper>
        <Paper withBorder p="sm">
          <Title order={3} size="h5" mb="xs">Labels</Title>
          <Group gap={4} mb="sm">{Object.entries(s.labels).map(([k, v]) => <Badge key={k} variant="outline" autoContrast>{k}={v}</Badge>)}
            {Object.keys(s.labels).length === 0 && <Text c="dimmed" size="sm">none</Text>}</Group>
          <Title order={3} size="h5" mb="xs">Driver properties</Title>
          <Code block>{JSON.stringify(s.driver, null, 2)}</Code>
        </Paper>
      </SimpleGrid>

      <Tabs defaultValue="variables">
        <Tabs.List>
          <Tabs.Tab value="variables">Variables</Tabs.Tab>
          <Tabs.Tab value="jobs">Jobs</Tabs.Tab>
          <Tabs.Tab value="releases">Releases</Tabs.Tab>
          <Tabs.Tab value="findings">Findings</Tabs.Tab>
          {me?.admin && <Tabs.Tab value="audit">Audit history</Tabs.Tab>}
        </Tabs.List>
        <Tabs.Panel value="variables" pt="sm">
          <ErrorNote error={vars.error} />
          <Text size="sm" c="dimmed" mb="xs">Precedence: {vars.data?.precedence.join(" < ")}</Text>
          <Table><Table.Thead><Table.Tr><Table.Th>Key</Table.Th><Table.Th>Value</Table.Th><Table.Th>From</Table.Th><Table.Th>Overrides</Table.Th></Table.Tr></Table.Thead>
            <Table.Tbody>{Object.entries(vars.data?.variables ?? {}).map(([k, v]) => (
              <Table.Tr key={k}><Table.Td><Code>{k}</Code></Table.Td><Table.Td><Code>{JSON.stringify(v.value)}</Code></Table.Td>
                <Table.Td>{srcText(v.source)}</Table.Td><Table.Td>{(v.overrides ?? []).map(srcText).join(", ")}</Table.Td></Table.Tr>
            ))}</Table.Tbody></Table>
        </Tabs.Panel>
        <Tabs.Panel value="jobs" pt="sm">
          <Table><Table.Thead><Table.Tr><Table.Th>Job</Table.Th><Table.Th>Action</Table.Th><Table.Th>Status</Table.Th><Table.Th>By</Table.Th><Table.Th>Created</Table.Th></Table.Tr></Table.Thead>
            <Table.Tbody>{(jobs.data?.items ?? []).map((j) => (
              <Table.Tr key={j.id}><Table.Td><Anchor component={Link} to={`/jobs/${j.id}`}>#{j.id}</Anchor></Table.Td><Table.Td>{j.action}</Table.Td>
                <Table.Td><StateBadge value={j.status} /></Table.Td><Table.Td>{j.actor ?? "—"}</Table.Td><Table.Td>{when(j.created_at)}</Table.Td></Table.Tr>
            ))}</Table.Tbody></Table>
        </Tabs.Panel>
        <Tabs.Panel value="findings" pt="sm"><Findings system={String(s.id)} limit={50} /></Tabs.Panel>
        <Tabs.Panel value="releases" pt="sm">
          <ErrorNote error={releases.error} />
          {releases.data && (<>
            <Text size="sm" mb="xs">Project: {releases.data.project ?? "—"} · current: {releases.data.current ?? "—"}{releases.data.simulated ? " (simulated)" : ""}</Text>
            <Table><Table.Tbody>{releases.data.releases.map((r) => (
              <Table.Tr key={r.id}><Table.Td><Code>{r.id}</Code>{r.current && <Badge ml="xs" autoContrast>current</Badge>}</Table.Td>
                <Table.Td>{acts && !r.current && <Button size="xs" variant="light" disabled={!!whyNot("rollback", s.state)}
                  onClick={() => setPending({ action: "rollback", params: { release: r.id } })}>Roll back to this</Button>}</Table.Td></Table.Tr>
            ))}</Table.Tbody></Table>
            {releases.data.releases.length === 0 && <Text c="dimmed" size="sm">No releases.</Text>}
          </>)}
        </Tabs.Panel>
        {me?.admin && <Tabs.Panel value="audit" pt="sm">
          <Table><Table.Tbody>{(audit.data?.items ?? []).map((a) => (
            <Table.Tr key={a.id}><Table.Td>{when(a.at)}</Table.Td><Table.Td>{a.username ?? "—"}</Table.Td><Table.Td>{a.method} {a.path}</Table.Td><Table.Td>{a.status}</Table.Td></Table.Tr>
          ))}</Table.Tbody></Table>
        </Tabs.Panel>}
      </Tabs>
    </>
  );
}

function srcText(src: S["VariableSource"]): string {
  return [src.level, src.name].filter(Boolean).join(" ");
}
