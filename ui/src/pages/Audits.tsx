// Fleet audits: checks (what is verified), audits (which checks over which systems) with their runs and
// pass rates over time, findings per system, and remediation runs waiting for an operator's approval.
import { useState } from "react";
import { Link, useSearchParams } from "react-router-dom";
import { Anchor, Badge, Button, Code, Group, MultiSelect, Paper, Progress, Select, Table, Tabs, Text, TextInput, Textarea, Title } from "@mantine/core";
import { api, call, fieldError, type S } from "../api/client";
import type { paths } from "../api/schema";
import { useAuth } from "../auth";
import { Confirm, ErrorNote, PageTitle, StateBadge, parseJson, parsePairs } from "../components/common";
import { CreatePanel } from "../components/Form";
import { Findings } from "../components/Findings";
import { canWriteSomewhere, useLoad, when } from "../lib";
import { jobIdOf } from "./Clusters";

type CheckBody = NonNullable<paths["/api/v1/checks"]["post"]["requestBody"]>["content"]["application/json"];
const KINDS = ["command", "ansible", "facts", "machine_drift"];
const SEVERITIES = ["info", "low", "medium", "high", "critical"];

export default function Audits() {
  const [search, setSearch] = useSearchParams();
  const tab = search.get("tab") ?? "audits";
  return (
    <>
      <PageTitle>Audits</PageTitle>
      <Tabs value={tab} onChange={(v) => setSearch({ tab: v ?? "audits" })}>
        <Tabs.List>
          <Tabs.Tab value="audits">Audits</Tabs.Tab>
          <Tabs.Tab value="checks">Checks</Tabs.Tab>
          <Tabs.Tab value="findings">Findings</Tabs.Tab>
          <Tabs.Tab value="remediations">Remediations</Tabs.Tab>
        </Tabs.List>
        <Tabs.Panel value="audits" pt="sm">{tab === "audits" && <AuditsTab />}</Tabs.Panel>
        <Tabs.Panel value="checks" pt="sm">{tab === "checks" && <ChecksTab />}</Tabs.Panel>
        <Tabs.Panel value="findings" pt="sm">{tab === "findings" && <Findings system={search.get("system") ?? undefined} />}</Tabs.Panel>
        <Tabs.Panel value="remediations" pt="sm">{tab === "remediations" && <RemediationsTab />}</Tabs.Panel>
      </Tabs>
    </>
  );
}

function rate(counts: Record<string, unknown>): number | null {
  const r = counts.pass_rate;
  return typeof r === "number" ? r : null;
}

/** Pass rates of the runs, oldest first, as a line: how the fleet's compliance moves over time. */
function Sparkline({ rates, label }: { rates: (number | null)[]; label: string }) {
  const pts = rates.map((r, i) => (r === null ? null : `${(i / Math.max(rates.length - 1, 1)) * 118 + 1},${29 - r * 28}`)).filter(Boolean);
  return (
    <svg width="120" height="30" role="img" aria-label={label}>
      <rect x="0" y="0" width="120" height="30" fill="none" stroke="currentColor" strokeOpacity="0.2" />
      {pts.length > 0 && <polyline points={pts.join(" ")} fill="none" stroke="currentColor" strokeWidth="2" />}
    </svg>
  );
}

function AuditsTab() {
  const { me } = useAuth();
  const audits = useLoad(() => call(api.GET("/api/v1/audits", { params: { query: { limit: 200 } } })), []);
  const checks = useLoad(() => call(api.GET("/api/v1/checks", { params: { query: { limit: 1000 } } })), []);
  const [open, setOpen] = useState<string | null>(null);
  const [form, setForm] = useState({ name: "", labels: "", environment: "", checks: [] as string[] });
  return (
    <>
      <ErrorNote error={audits.error} />
      <Table striped>
        <Table.Thead><Table.Tr><Table.Th>Audit</Table.Th><Table.Th>Checks</Table.Th><Table.Th>Selector</Table.Th><Table.Th>Last run</Table.Th><Table.Th>Pass rate</Table.Th><Table.Th /></Table.Tr></Table.Thead>
        <Table.Tbody>{(audits.data?.items ?? []).map((a) => {
          const r = a.last_run ? rate(a.last_run.counts) : null;
          return (
            <Table.Tr key={a.id}>
              <Table.Td>{a.name}<Text size="xs" c="dimmed">{a.description}</Text></Table.Td>
              <Table.Td>{a.checks.map((c) => c.name).join(", ")}</Table.Td>
              <Table.Td><Code>{JSON.stringify(a.selector)}</Code></Table.Td>
              <Table.Td>{a.last_run ? <><StateBadge value={a.last_run.status} /> {when(a.last_run.started_at)}</> : "never"}</Table.Td>
              <Table.Td>{r === null ? "—" : <><Progress value={r * 100} aria-label={`pass rate ${Math.round(r * 100)} %`} color={r === 1 ? "green" : r > 0.8 ? "yellow" : "red"} /><Text size="xs">{Math.round(r * 100)} % pass</Text></>}</Table.Td>
              <Table.Td><Button size="compact-xs" variant="default" onClick={() => setOpen(open === a.name ? null : a.name)}>{open === a.name ? "Hide runs" : `Runs of ${a.name}`}</Button></Table.Td>
            </Table.Tr>);
        })}</Table.Tbody>
      </Table>
      {audits.data && audits.data.items.length === 0 && <Text c="dimmed" size="sm" my="sm">No audits yet.</Text>}
      {open && <AuditRuns name={open} mayRun={canWriteSomewhere(me)} />}
      {me?.admin && (
        <CreatePanel title="New audit" onSubmit={async () => {
          const selector: Record<string, unknown> = {};
          if (form.labels.trim()) selector.labels = parsePairs(form.labels);
          if (form.environment.trim()) selector.environment = form.environment.trim();
          await call(api.POST("/api/v1/audits", { body: { name: form.name, checks: form.checks, selector: selector as S["Selector"] } }));
          setForm({ name: "", labels: "", environment: "", checks: [] }); audits.reload();
        }}>{(err) => (<>
          <TextInput label="Audit name" required value={form.name} onChange={(e) => setForm({ ...form, name: e.currentTarget.value })} error={fieldError(err, "name")} />
          <MultiSelect label="Checks" required data={(checks.data?.items ?? []).map((c) => c.name)} value={form.checks} onChange={(v) => setForm({ ...form, checks: v })} error={fieldError(err, "checks")} />
          <Group grow>
            <TextInput label="Systems with labels (k=v, k2=v2)" value={form.labels} onChange={(e) => setForm({ ...form, labels: e.currentTarget.value })} error={fieldError(err, "selector")} />
            <TextInput label="In environment" value={form.environment} onChange={(e) => setForm({ ...form, environment: e.currentTarget.value })} />
          </Group>
        </>)}</CreatePanel>
      )}
    </>
  );
}

function AuditRuns({ name, mayRun }: { name: string; mayRun: boolean }) {
  const path = { params: { path: { ref: name } } };
  const runs = useLoad(() => call(api.GET("/api/v1/audits/{ref}/runs", path)), [name]);
  const [error, setError] = useState<unknown>();
  const items = runs.data?.items ?? [];
  const rates = [...items].reverse().map((r) => rate(r.counts));
  return (
    <Paper withBorder p="sm" my="md" component="section" aria-label={`Runs of ${name}`}>
      <Group justify="space-between" mb="xs">
        <Group><Title order={3} size="h5">Runs of {name}</Title><Sparkline rates={rates} label={`pass rate of the last ${rates.length} runs of ${name}`} /></Group>
        {mayRun && <Button size="xs" onClick={async () => {
          try { await call(api.POST("/api/v1/audits/{ref}/runs", path)); setError(undefined); runs.reload(); } catch (e) { setError(e); }
        }}>Run {name} now</Button>}
      </Group>
      <ErrorNote error={runs.error ?? error} />
      <Table><Table.Thead><Table.Tr><Table.Th>Run</Table.Th><Table.Th>Status</Table.Th><Table.Th>By</Table.Th><Table.Th>Started</Table.Th><Table.Th>Systems</Table.Th><Table.Th>pass / fail / error</Table.Th><Table.Th>New failures / fixed</Table.Th><Table.Th>Job</Table.Th></Table.Tr></Table.Thead>
        <Table.Tbody>{items.map((r) => {
          const c = r.counts as Record<string, number | null>;
          return (
            <Table.Tr key={r.id}>
              <Table.Td><Anchor component={Link} to={`/audits?tab=findings&run=${r.id}`}>#{r.id}</Anchor></Table.Td>
              <Table.Td><StateBadge value={r.status} /></Table.Td><Table.Td>{r.actor ?? "schedule"}</Table.Td><Table.Td>{when(r.started_at)}</Table.Td>
              <Table.Td>{r.systems}</Table.Td><Table.Td>{c.pass ?? 0} / {c.fail ?? 0} / {c.error ?? 0}{c.pass_rate != null && ` (${Math.round(Number(c.pass_rate) * 100)} %)`}</Table.Td>
              <Table.Td>{c.new_failures ?? 0} / {c.fixed ?? 0}</Table.Td>
              <Table.Td>{r.job_id ? <Anchor component={Link} to={`/jobs/${r.job_id}`}>job {r.job_id}</Anchor> : "—"}</Table.Td>
            </Table.Tr>);
        })}</Table.Tbody></Table>
    </Paper>
  );
}

function ChecksTab() {
  const { me } = useAuth();
  const checks = useLoad(() => call(api.GET("/api/v1/checks", { params: { query: { limit: 1000 } } })), []);
  const [f, setF] = useState({ name: "", kind: "command", severity: "medium", tags: "", description: "", spec: '{"command": "test -f /etc/hostname"}' });
  return (
    <>
      <ErrorNote error={checks.error} />
      <Table striped>
        <Table.Thead><Table.Tr><Table.Th>Check</Table.Th><Table.Th>Kind</Table.Th><Table.Th>Severity</Table.Th><Table.Th>Tags</Table.Th><Table.Th>Spec</Table.Th></Table.Tr></Table.Thead>
        <Table.Tbody>{(checks.data?.items ?? []).map((c) => (
          <Table.Tr key={c.id}><Table.Td>{c.name}<Text size="xs" c="dimmed">{c.description}</Text></Table.Td><Table.Td>{c.kind}</Table.Td>
            <Table.Td><Badge variant="dot" color={c.severity === "critical" || c.severity === "high" ? "red" : "gray"}>{c.severity}</Badge></Table.Td>
            <Table.Td>{c.tags.join(", ")}</Table.Td><Table.Td><Code>{JSON.stringify(c.spec)}</Code></Table.Td></Table.Tr>
        ))}</Table.Tbody>
      </Table>
      {me?.admin && (
        <CreatePanel title="New check" onSubmit={async () => {
          // The spec is typed per kind by the API; here it is the JSON the user wrote, and the API validates it.
          const body = { name: f.name, kind: f.kind, severity: f.severity, description: f.description,
            tags: f.tags.split(/[,\s]+/).filter(Boolean), spec: parseJson(f.spec, "Spec") } as unknown as CheckBody;
          await call(api.POST("/api/v1/checks", { body }));
          setF({ ...f, name: "" }); checks.reload();
        }}>{(err) => (<>
          <TextInput label="Check name" required value={f.name} onChange={(e) => setF({ ...f, name: e.currentTarget.value })} error={fieldError(err, "name")} />
          <Group grow>
            <Select label="Kind" required data={KINDS} value={f.kind} onChange={(v) => setF({ ...f, kind: v ?? "command" })} error={fieldError(err, "kind")} />
            <Select label="Severity" data={SEVERITIES} value={f.severity} onChange={(v) => setF({ ...f, severity: v ?? "medium" })} error={fieldError(err, "severity")} />
          </Group>
          <TextInput label="Description" value={f.description} onChange={(e) => setF({ ...f, description: e.currentTarget.value })} />
          <TextInput label="Tags (comma separated)" value={f.tags} onChange={(e) => setF({ ...f, tags: e.currentTarget.value })} error={fieldError(err, "tags")} />
          <Textarea label="Spec (JSON)" autosize minRows={3} ff="monospace" value={f.spec} onChange={(e) => setF({ ...f, spec: e.currentTarget.value })} error={fieldError(err, "spec")} />
        </>)}</CreatePanel>
      )}
    </>
  );
}

function RemediationsTab() {
  const { me } = useAuth();
  const fixes = useLoad(() => call(api.GET("/api/v1/remediations", { params: { query: { limit: 200 } } })), []);
  const runs = useLoad(async () => {
    const all = await Promise.all((fixes.data?.items ?? []).map((f) => call(api.GET("/api/v1/remediations/{ref}/runs", { params: { path: { ref: f.name } } }))));
    return all.flatMap((p) => p.items).sort((a, b) => b.id - a.id);
  }, [fixes.data]);
  const [rejecting, setRejecting] = useState<S["RemediationRunOut"] | null>(null);
  const [reason, setReason] = useState("");
  const [error, setError] = useState<unknown>();
  const writer = canWriteSomewhere(me);
  return (
    <>
      <ErrorNote error={fixes.error ?? runs.error ?? error} />
      <Title order={3} size="h5" mb="xs">Runs</Title>
      <Table striped>
        <Table.Thead><Table.Tr><Table.Th>Run</Table.Th><Table.Th>Remediation</Table.Th><Table.Th>Status</Table.Th><Table.Th>Requested by</Table.Th><Table.Th>Systems</Table.Th><Table.Th>Decision</Table.Th><Table.Th>Job</Table.Th>{writer && <Table.Th />}</Table.Tr></Table.Thead>
        <Table.Tbody>{(runs.data ?? []).map((r) => (
          <Table.Tr key={r.id}>
            <Table.Td>#{r.id}</Table.Td><Table.Td>{r.remediation.name}</Table.Td><Table.Td><StateBadge value={r.status} /></Table.Td>
            <Table.Td>{r.requested_by ?? "schedule"} · {when(r.created_at)}</Table.Td><Table.Td>{r.systems.length}</Table.Td>
            <Table.Td>{r.approved_by ? `approved by ${r.approved_by}` : r.rejected_by ? `rejected by ${r.rejected_by}: ${r.reason ?? ""}` : "—"}</Table.Td>
            <Table.Td>{r.job_id ? <Anchor component={Link} to={`/jobs/${r.job_id}`}>job {r.job_id}</Anchor> : "—"}</Table.Td>
            {writer && <Table.Td>{r.status === "awaiting_approval" && <Group gap={4} wrap="nowrap">
              <Button size="compact-xs" onClick={async () => {
                try { await call(api.POST("/api/v1/remediations/runs/{run_id}/approve", { params: { path: { run_id: r.id } } })); setError(undefined); runs.reload(); } catch (e) { setError(e); }
              }} aria-label={`Approve run ${r.id}`}>Approve</Button>
              <Button size="compact-xs" variant="default" color="red" onClick={() => { setReason(""); setRejecting(r); }} aria-label={`Reject run ${r.id}`}>Reject</Button>
            </Group>}</Table.Td>}
          </Table.Tr>))}</Table.Tbody>
      </Table>
      {runs.data && runs.data.length === 0 && <Text c="dimmed" size="sm" my="sm">No remediation runs.</Text>}
      <Title order={3} size="h5" my="xs">Remediations</Title>
      <Table><Table.Thead><Table.Tr><Table.Th>Name</Table.Th><Table.Th>Fixes check</Table.Th><Table.Th>Kind</Table.Th><Table.Th>Batch / concurrency / max failures</Table.Th><Table.Th /></Table.Tr></Table.Thead>
        <Table.Tbody>{(fixes.data?.items ?? []).map((f) => (
          <Table.Tr key={f.id}><Table.Td>{f.name}</Table.Td><Table.Td>{f.check.name}</Table.Td><Table.Td>{f.kind}</Table.Td>
            <Table.Td>{f.batch_size ?? "all"} / {f.concurrency} / {f.max_failures ?? "—"}</Table.Td>
            <Table.Td>{writer && <Button size="compact-xs" variant="default" onClick={async () => {
              try { const b = await call(api.POST("/api/v1/remediations/{ref}/runs", { params: { path: { ref: f.name } } })); void jobIdOf(b); setError(undefined); runs.reload(); } catch (e) { setError(e); }
            }}>Run {f.name}</Button>}</Table.Td></Table.Tr>))}</Table.Tbody></Table>
      <Confirm opened={!!rejecting} title={`Reject run #${rejecting?.id}`} confirmLabel="Reject" danger onCancel={() => setRejecting(null)}
        onConfirm={async () => {
          await call(api.POST("/api/v1/remediations/runs/{run_id}/reject", { params: { path: { run_id: rejecting!.id } }, body: { reason } }));
          setRejecting(null); runs.reload();
        }}>
        <Text size="sm">Requested by {rejecting?.requested_by ?? "the schedule"} for {rejecting?.systems.length} systems.</Text>
        <TextInput label="Reason" value={reason} onChange={(e) => setReason(e.currentTarget.value)} />
      </Confirm>
    </>
  );
}
