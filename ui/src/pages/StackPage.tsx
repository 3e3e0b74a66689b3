// One stack, or a new one: the template editor (YAML) with its parameters, "Validate" listing every problem
// with its path, "Plan" showing the stored plan as a diff per resource, then "Apply plan N" (a 409 when the
// stack changed since: plan again) and the job to follow live; resources with the drift the last check
// found, outputs (secret ones redacted by the API), events; check, converge and delete.
import { useEffect, useRef, useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { Alert, Anchor, Button, Code, Group, List, Paper, PasswordInput, Select, SimpleGrid, Stack, Table, Tabs, Text,
  TextInput, Textarea, Title } from "@mantine/core";
import { ApiError, api, call, fieldError, type S } from "../api/client";
import { useAuth } from "../auth";
import { Confirm, ErrorNote, PageTitle } from "../components/common";
import { useRefs } from "../components/refs";
import { roleIn, useLoad, when } from "../lib";
import { jobIdOf } from "./Clusters";
import { StackStatus } from "./Stacks";

type Verdict = S["ValidateOut"];
type Plan = S["PlanOut"];
type Change = S["ChangeOut"];
type Problem = { path: string; message: string };
const REDACTED = "******";

export default function StackPage() {
  const { name } = useParams();
  return name ? <ExistingStack key={name} name={name} /> : <NewStack />;
}

// ---------------------------------------------------------------- a new stack

function NewStack() {
  const navigate = useNavigate();
  const { me } = useAuth();
  const refs = useRefs();
  const [form, setForm] = useState({ name: "", environment: "", description: "" });
  const editor = useEditor("", {});
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const envs = (refs.data?.envs ?? []).filter((e) => me?.admin || roleIn(me, e.id) === "operator").map((e) => e.name);

  async function create() {
    setBusy(true); setError(undefined);
    try {
      await call(api.POST("/api/v1/stacks", { body: { name: form.name, environment: form.environment,
        description: form.description, template: editor.text, parameters: editor.toSend() } }));
      navigate(`/stacks/${form.name}`);
    } catch (e) { setError(e); } finally { setBusy(false); }
  }

  return (
    <>
      <PageTitle>New stack</PageTitle>
      <form onSubmit={(e) => { e.preventDefault(); void create(); }}>
        <Stack gap="sm">
          <SimpleGrid cols={{ base: 1, md: 3 }}>
            <TextInput label="Stack name" required value={form.name} error={fieldError(error, "name")}
              onChange={(e) => setForm({ ...form, name: e.currentTarget.value })} />
            <Select label="Environment" required data={envs} value={form.environment || null} error={fieldError(error, "environment")}
              onChange={(v) => setForm({ ...form, environment: v ?? "" })} />
            <TextInput label="Description" value={form.description}
              onChange={(e) => setForm({ ...form, description: e.currentTarget.value })} />
          </SimpleGrid>
          <TemplateEditor editor={editor} />
          <RequestError error={error} />
          <Group>
            <Button variant="default" loading={editor.validating} onClick={() => void editor.validate(true)}>Validate</Button>
            <Button type="submit" loading={busy}>Create stack</Button>
          </Group>
          <Text size="xs" c="dimmed">Creating defines the stack: nothing is made until you plan and apply it.</Text>
        </Stack>
      </form>
    </>
  );
}

// ---------------------------------------------------------------- an existing stack

function ExistingStack({ name }: { name: string }) {
  const navigate = useNavigate();
  const { me } = useAuth();
  const path = { params: { path: { ref: name } } };
  const stack = useLoad(() => call(api.GET("/api/v1/stacks/{ref}", path)), [name]);
  const resources = useLoad(() => call(api.GET("/api/v1/stacks/{ref}/resources", path)), [name]);
  const events = useLoad(() => eventsOf(name), [name]);
  const exported = useLoad(() => call(api.GET("/api/v1/stacks/{ref}/export", path)), [name]);
  const [tab, setTab] = useState<string | null>("template");
  const [op, setOp] = useState<"converge" | "delete" | null>(null);
  const [opError, setOpError] = useState<unknown>();
  const c = stack.data;
  const envId = (c?.environment as { id?: number } | undefined)?.id ?? -1;
  const mayAct = !!c && (!!me?.admin || roleIn(me, envId) === "operator");
  const jobId = c?.running_job_id ?? c?.last_job_id ?? undefined;
  const reload = () => { stack.reload(); resources.reload(); events.reload(); };

  // While an operation runs, follow it: status, resources and events every 2 s until the job ends.
  const running = !!c?.running_job_id;
  useEffect(() => {
    if (!running) return;
    const t = setInterval(reload, 2000);
    return () => { clearInterval(t); reload(); };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [running]);

  async function start(operation: "check" | "converge" | "delete") {
    setOpError(undefined);
    const body = operation === "delete"
      ? await call(api.DELETE("/api/v1/stacks/{ref}", path))
      : await call(api.POST(operation === "check" ? "/api/v1/stacks/{ref}/check" : "/api/v1/stacks/{ref}/converge", path));
    const job = jobIdOf(body);
    setOp(null);
    if (operation === "delete" && job) navigate(`/jobs/${job}`);
    else reload();
  }

  return (
    <>
      <PageTitle actions={mayAct && (
        <Group gap="xs">
          <Button size="xs" variant="default" onClick={() => setOp("converge")}>Converge</Button>
          <Button size="xs" color="red" variant="outline" onClick={() => setOp("delete")}>Delete</Button>
          <Button size="xs" variant="default" onClick={reload}>Refresh</Button>
        </Group>)}>{`Stack ${name}`}</PageTitle>
      <ErrorNote error={stack.error ?? opError} />
      {c && (<>
        <Paper withBorder p="sm" mb="md">
          <Group gap="xs"><Text size="sm">Status</Text><span data-testid="stack-status"><StackStatus value={c.status} /></span>
            <Text size="sm">{c.status_reason}</Text></Group>
          <Text size="sm" mt="xs">Environment {(c.environment as { name?: string }).name} · version {c.serial} · {c.resources} resources
            · owner {c.owner ?? "—"} · updated {when(c.updated_at)}{c.description ? ` · ${c.description}` : ""}</Text>
          {jobId
            ? <Text size="sm">{c.running_job_id ? "Running: " : "Last operation: "}<Anchor component={Link} underline="always" to={`/jobs/${jobId}`} data-testid="stack-job">job {jobId}</Anchor> (live log, steps and each resource's job)</Text>
            : <Text size="sm" c="dimmed">Nothing applied yet: plan, then apply the plan.</Text>}
        </Paper>
        <Tabs value={tab} onChange={setTab}>
          <Tabs.List>
            <Tabs.Tab value="template">Template and plan</Tabs.Tab>
            <Tabs.Tab value="resources">Resources ({c.resources})</Tabs.Tab>
            <Tabs.Tab value="outputs">Outputs ({Object.keys(c.outputs).length})</Tabs.Tab>
            <Tabs.Tab value="events">Events</Tabs.Tab>
          </Tabs.List>
          <Tabs.Panel value="template" pt="sm">
            {exported.data
              ? <PlanPanel name={name} template={(exported.data as { template?: unknown }).template} stored={c.parameters}
                  mayAct={mayAct} onApplied={reload} />
              : <ErrorNote error={exported.error} />}
          </Tabs.Panel>
          <Tabs.Panel value="resources" pt="sm">
            <ResourcesPanel resources={resources.data} error={resources.error} events={events.data ?? []}
              onCheck={mayAct ? () => start("check") : undefined} busy={running} />
          </Tabs.Panel>
          <Tabs.Panel value="outputs" pt="sm"><OutputsTable outputs={c.outputs} label="Outputs" /></Tabs.Panel>
          <Tabs.Panel value="events" pt="sm"><EventsTable events={events.data} error={events.error} /></Tabs.Panel>
        </Tabs>
      </>)}
      <Confirm opened={op !== null} title={op === "delete" ? `Delete stack ${name}` : `Converge stack ${name}`}
        confirmLabel={op === "delete" ? "Delete stack and its resources" : "Converge"} danger={op === "delete"}
        onCancel={() => setOp(null)} onConfirm={() => start(op!)}>
        <Text size="sm">{op === "delete"
          ? `Every resource of ${name} is deleted in reverse dependency order (those with deletion_policy: retain are only forgotten), then the stack itself.`
          : "Every resource is checked, then the stored template is applied again: what drifted is repaired (a missing or stopped machine is replaced)."}</Text>
      </Confirm>
    </>
  );
}

// ---------------------------------------------------------------- the editor

/** The editor's state: the template text, the parameters' values, the last verdict and its problems. */
function useEditor(initial: string, stored: Record<string, unknown>) {
  const [text, setText] = useState(initial);
  const [values, setValues] = useState<Record<string, string>>(() => Object.fromEntries(
    Object.entries(stored).filter(([, v]) => v !== REDACTED).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)])));
  const [verdict, setVerdict] = useState<Verdict>();
  const [problems, setProblems] = useState<Problem[]>([]);
  const [validating, setValidating] = useState(false);
  const [error, setError] = useState<unknown>();
  const hiddenStored = Object.keys(stored).filter((k) => stored[k] === REDACTED);
  const names = verdict?.valid ? verdict.parameters : Object.keys(stored);
  const hidden = verdict?.valid ? verdict.hidden_parameters : hiddenStored;

  /** The values typed, for the template's parameters; an empty field is left out (stored value or default). */
  function toSend(of: Verdict | undefined = verdict): Record<string, string> {
    return Object.fromEntries(Object.entries(values).filter(([k, v]) => v !== "" && (!of?.valid || of.parameters.includes(k))));
  }

  /** Validate the template, then (for a new stack) the parameters typed; true when both are fine. The template's
   * own verdict names the parameters (their fields appear even while a required one is still missing). */
  async function validate(withParameters: boolean): Promise<boolean> {
    setValidating(true); setError(undefined);
    try {
      const check = (parameters?: Record<string, string>) =>
        call(api.POST("/api/v1/stacks/validate", { body: { template: text, parameters } }));
      const v = await check();
      const found = v.valid && withParameters ? (await check(toSend(v))).problems : v.problems;
      setVerdict(v); setProblems(found);
      return v.valid && found.length === 0;
    } catch (e) { setError(e); setVerdict(undefined); return false; } finally { setValidating(false); }
  }

  return { text, setText, values, setValues, verdict, setVerdict, problems, setProblems, validating, validate, toSend,
    names, hidden, hiddenStored, error };
}
type Editor = ReturnType<typeof useEditor>;

function TemplateEditor({ editor, readOnly }: { editor: Editor; readOnly?: boolean }) {
  const { verdict, problems } = editor;
  return (
    <Stack gap="xs">
      <Textarea label="Template (YAML)" description="YAML or JSON text: parameters, resources, outputs (see docs/stacks-templates.md)"
        value={editor.text} onChange={(e) => { editor.setText(e.currentTarget.value); editor.setVerdict(undefined); }}
        autosize minRows={12} maxRows={30} spellCheck={false} readOnly={readOnly} required
        placeholder={"armillary_template_version: 1\nresources:\n  web:\n    type: Armillary::System\n    properties:\n      hypervisor: sim"}
        error={problems.length ? `${problems.length} problem${problems.length > 1 ? "s" : ""}: see below` : undefined}
        styles={{ input: { fontFamily: "ui-monospace, SFMono-Regular, Menlo, monospace", fontSize: 13 } }} />
      {editor.names.length > 0 && (
        <Paper withBorder p="sm" component="section" aria-label="Parameters">
          <Title order={3} size="h6" mb="xs">Parameters</Title>
          <SimpleGrid cols={{ base: 1, md: 3 }}>
            {editor.names.map((n) => editor.hidden.includes(n)
              ? <PasswordInput key={n} label={`${n} (hidden)`} readOnly={readOnly} value={editor.values[n] ?? ""}
                  description={editor.hiddenStored.includes(n) ? "set: leave empty to keep it" : "secret: never shown again"}
                  onChange={(e) => editor.setValues({ ...editor.values, [n]: e.currentTarget.value })} />
              : <TextInput key={n} label={n} readOnly={readOnly} value={editor.values[n] ?? ""} placeholder="stored value or default"
                  onChange={(e) => editor.setValues({ ...editor.values, [n]: e.currentTarget.value })} />)}
          </SimpleGrid>
        </Paper>)}
      <ErrorNote error={editor.error} />
      {problems.length > 0 && <ProblemList problems={problems} title="The template has problems" />}
      {verdict?.valid && problems.length === 0 && (
        <Alert title="Valid" data-testid="valid">
          <Text size="sm">{Object.keys(verdict.resources).length} resources ({Object.entries(verdict.resources).map(([r, t]) => `${r}: ${t}`).join(", ")})
            {verdict.parameters.length ? `; parameters ${verdict.parameters.join(", ")}` : ""}
            {verdict.outputs.length ? `; outputs ${verdict.outputs.join(", ")}` : ""}.</Text>
        </Alert>)}
    </Stack>
  );
}

function ProblemList({ problems, title }: { problems: Problem[]; title: string }) {
  return (
    <Alert color="red" title={title} role="alert">
      <List size="sm" spacing={2}>
        {problems.map((p, i) => <List.Item key={i} data-testid="template-problem"><Code>{p.path}</Code> {p.message}</List.Item>)}
      </List>
    </Alert>
  );
}

/** A refusal: the template's problems as a list (each with its path), anything else in words. */
function RequestError({ error }: { error: unknown }) {
  const errors = error instanceof ApiError ? error.problem.errors ?? [] : [];
  if (errors.length && error instanceof ApiError && error.status === 422) {
    return <ProblemList title={error.problem.title ?? "Invalid"} problems={errors.map((e) => ({ path: e.field, message: e.message }))} />;
  }
  return <ErrorNote error={error} />;
}

// ---------------------------------------------------------------- plan and apply

function PlanPanel({ name, template, stored, mayAct, onApplied }: {
  name: string; template: unknown; stored: Record<string, unknown>; mayAct: boolean; onApplied: () => void;
}) {
  const editor = useEditor(typeof template === "string" ? template : toYaml(template ?? {}), stored);
  const [plan, setPlan] = useState<Plan>();
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState<"plan" | "apply" | null>(null);
  const path = { params: { path: { ref: name } } };

  // The parameters' fields come from the template: read it once on arrival.
  // eslint-disable-next-line react-hooks/exhaustive-deps
  useEffect(() => { void editor.validate(false); }, []);

  async function makePlan() {
    setBusy("plan"); setError(undefined); setPlan(undefined);
    try {
      if (await editor.validate(false)) {
        setPlan(await call(api.POST("/api/v1/stacks/{ref}/plans", { ...path, body: { template: editor.text, parameters: editor.toSend() } })));
      }
    } catch (e) { setError(e); } finally { setBusy(null); }
  }

  async function apply(p: Plan) {
    setBusy("apply"); setError(undefined);
    try {
      const job = jobIdOf(await call(api.POST("/api/v1/stacks/{ref}/apply", { ...path, body: { plan: p.number } })));
      setPlan({ ...p, applied_job_id: job ?? null });
      onApplied();
    } catch (e) {
      if (e instanceof ApiError && e.status === 409 && e.problem.type?.endsWith(":plan-stale")) setPlan({ ...p, stale: true });
      setError(e);
    } finally { setBusy(null); }
  }

  return (
    <Stack gap="sm">
      <TemplateEditor editor={editor} readOnly={!mayAct} />
      <Group>
        <Button variant="default" loading={editor.validating && !busy} onClick={() => void editor.validate(false)}>Validate</Button>
        {mayAct && <Button loading={busy === "plan"} onClick={() => void makePlan()}>Plan</Button>}
      </Group>
      <RequestError error={error} />
      {plan && <PlanView plan={plan} mayAct={mayAct} busy={busy === "apply"} onApply={() => void apply(plan)} />}
    </Stack>
  );
}

const ACTION: Record<string, { sign: string; color: string; words: string }> = {
  create: { sign: "+", color: "green", words: "create" },
  adopt: { sign: "+", color: "green", words: "adopt" },
  update: { sign: "~", color: "yellow", words: "update in place" },
  replace: { sign: "-/+", color: "orange", words: "replace" },
  delete: { sign: "-", color: "red", words: "delete" },
  forget: { sign: "-", color: "gray", words: "forget (retained)" },
};

export function planSummary(plan: Plan): string {
  const n = (...actions: string[]) => actions.reduce((sum, a) => sum + (plan.summary[a] ?? 0), 0);
  return `${n("create", "adopt")} to add, ${n("update")} to change, ${n("replace")} to replace, ${n("delete", "forget")} to destroy, ${n("no-op")} unchanged`;
}

function PlanView({ plan, mayAct, busy, onApply }: { plan: Plan; mayAct: boolean; busy: boolean; onApply: () => void }) {
  // A new plan is shown below a long editor: bring it into view.
  const shown = useRef<HTMLDivElement>(null);
  useEffect(() => { shown.current?.scrollIntoView?.({ block: "nearest" }); }, [plan.number]);
  const changing = plan.changes.filter((c) => c.action !== "no-op");
  const unchanged = plan.changes.filter((c) => c.action === "no-op");
  return (
    <Paper ref={shown} withBorder p="sm" component="section" aria-label={`Plan ${plan.number}`} data-testid="plan">
      <Title order={3} size="h5">Plan {plan.number}</Title>
      <Text size="sm" data-testid="plan-summary">Plan {plan.number}: {planSummary(plan)}.</Text>
      <Text size="xs" c="dimmed" mb="xs">Made by {plan.created_by ?? "—"} {when(plan.created_at)} from version {plan.serial} of the stack.</Text>
      <ul aria-label="Changes" style={{ listStyle: "none", padding: 0, margin: 0 }}>
        {changing.map((c) => <ChangeLine key={c.resource} change={c} />)}
      </ul>
      {changing.length === 0 && <Text size="sm">Nothing to change.</Text>}
      {unchanged.length > 0 && (
        <details style={{ marginTop: 6 }}>
          <summary style={{ cursor: "pointer", fontSize: "var(--mantine-font-size-sm)" }}>{unchanged.length} unchanged</summary>
          <ul style={{ listStyle: "none", padding: 0, margin: 0 }}>{unchanged.map((c) => <ChangeLine key={c.resource} change={c} />)}</ul>
        </details>)}
      {Object.keys(plan.outputs).length > 0 && <OutputsTable outputs={plan.outputs} label="Outputs after this plan" />}
      {mayAct && (
        <Group mt="sm">
          <Button onClick={onApply} loading={busy} disabled={plan.stale || !!plan.applied_job_id}>Apply plan {plan.number}</Button>
          {plan.applied_job_id
            ? <Text size="sm">Applying: <Anchor component={Link} underline="always" to={`/jobs/${plan.applied_job_id}`} data-testid="apply-job">job {plan.applied_job_id}</Anchor> (follow it live)</Text>
            : plan.stale && <Text size="sm">The stack changed since this plan was made: plan again.</Text>}
        </Group>)}
    </Paper>
  );
}

function ChangeLine({ change: c }: { change: Change }) {
  const a = ACTION[c.action];
  const detail = c.action === "update" ? c.fields?.join(", ") : c.action === "replace"
    ? `${c.property ?? ""}${c.reason ? `: ${c.reason}` : ""}` : c.reason;
  return (
    <li data-testid="plan-change" data-action={c.action} style={{
      fontFamily: "ui-monospace, SFMono-Regular, Menlo, monospace", fontSize: 13, padding: "2px 8px", margin: "2px 0",
      background: a ? `var(--mantine-color-${a.color}-light)` : undefined, color: "var(--mantine-color-text)",
      borderLeft: `3px solid var(--mantine-color-${a?.color ?? "gray"}-filled)` }}>
      <b style={{ display: "inline-block", width: "3ch" }}>{a?.sign ?? " "}</b> {c.resource} ({c.type}) — {a?.words ?? c.action}
      {detail ? `: ${detail}` : ""}
    </li>
  );
}

// ---------------------------------------------------------------- resources, outputs, events

type Resource = S["ResourceOut"];
type StackEvent = { id: number; resource?: string | null; action: string; status: string; message: string; job_id?: number | null; created_at: string };

function ResourcesPanel({ resources, error, events, onCheck, busy }: {
  resources: Resource[] | undefined; error: unknown; events: StackEvent[]; onCheck?: () => Promise<void>; busy: boolean;
}) {
  const [checkError, setCheckError] = useState<unknown>();
  const lastCheck = [...events].reverse().find((e) => !e.resource && ["check", "converge"].includes(e.action) && e.status !== "started");
  return (
    <>
      <Group mb="xs">
        {onCheck && <Button size="xs" variant="default" disabled={busy} onClick={() => {
          setCheckError(undefined); onCheck().catch(setCheckError);
        }}>Check for drift</Button>}
        <Text size="sm" data-testid="last-check">{lastCheck
          ? `Last ${lastCheck.action} ${when(lastCheck.created_at)} (${lastCheck.status}): ${lastCheck.message}`
          : "Not checked yet: drift is what a check finds."}</Text>
      </Group>
      <ErrorNote error={error ?? checkError} />
      <Table striped>
        <Table.Thead><Table.Tr><Table.Th>Resource</Table.Th><Table.Th>Type</Table.Th><Table.Th>Status</Table.Th><Table.Th>Physical id</Table.Th>
          <Table.Th>Drift</Table.Th><Table.Th>Depends on</Table.Th><Table.Th>Job</Table.Th></Table.Tr></Table.Thead>
        <Table.Tbody>{(resources ?? []).map((r) => (
          <Table.Tr key={r.name} data-testid="stack-resource">
            <Table.Td>{r.name}</Table.Td>
            <Table.Td>{r.type}</Table.Td>
            <Table.Td><StackStatus value={r.status} />{r.status_reason && <Text size="xs">{r.status_reason}</Text>}</Table.Td>
            <Table.Td>{r.physical_id && r.type === "Armillary::System"
              ? <Anchor component={Link} to={`/systems/${r.physical_id}`}>{`system ${r.physical_id}`}</Anchor> : r.physical_id ?? "—"}</Table.Td>
            <Table.Td data-testid="resource-drift"><Drift drift={r.drift} checked={!!lastCheck} /></Table.Td>
            <Table.Td>{r.depends_on.join(", ") || "—"}</Table.Td>
            <Table.Td>{r.job_id ? <Anchor component={Link} to={`/jobs/${r.job_id}`}>#{r.job_id}</Anchor> : "—"}</Table.Td>
          </Table.Tr>))}</Table.Tbody>
      </Table>
      {resources && resources.length === 0 && <Text size="sm" c="dimmed" my="sm">No resources yet: apply a plan.</Text>}
    </>
  );
}

function Drift({ drift, checked }: { drift: Record<string, unknown>; checked: boolean }) {
  const d = drift as { state?: string; detail?: string; differing?: Record<string, { expected?: unknown; actual?: unknown }> };
  if (!d.state) return <Text size="sm">{checked ? "no drift" : "not checked"}</Text>;
  return (
    <Stack gap={0}>
      <Text size="sm" fw={600}>{d.state === "ok" ? "properties differ" : d.state}{d.detail ? `: ${d.detail}` : ""}</Text>
      {Object.entries(d.differing ?? {}).map(([k, v]) => (
        <Text size="xs" key={k}><Code>{k}</Code> expected <Code>{JSON.stringify(v.expected)}</Code>, actual <Code>{JSON.stringify(v.actual)}</Code></Text>))}
    </Stack>
  );
}

function OutputsTable({ outputs, label }: { outputs: Record<string, unknown>; label: string }) {
  const names = Object.keys(outputs);
  if (names.length === 0) return <Text size="sm" c="dimmed">No outputs (yet: they are computed by an apply).</Text>;
  return (
    <Table mt="xs" aria-label={label}>
      <Table.Thead><Table.Tr><Table.Th>Output</Table.Th><Table.Th>Value</Table.Th></Table.Tr></Table.Thead>
      <Table.Tbody>{names.map((n) => (
        <Table.Tr key={n} data-testid="stack-output">
          <Table.Td>{n}</Table.Td>
          <Table.Td>{outputs[n] === REDACTED
            ? <Text size="sm" span>{REDACTED} <Text span size="xs" c="dimmed">(secret: redacted)</Text></Text>
            : <Code>{typeof outputs[n] === "string" ? outputs[n] as string : JSON.stringify(outputs[n])}</Code>}</Table.Td>
        </Table.Tr>))}</Table.Tbody>
    </Table>
  );
}

const EVENT_LIMIT = 1000;
const LATEST = 2 ** 31 - 1; // the API's largest id: ``before`` it gives the newest events

/** The stack's latest events (the API pages them newest first with ``before``), returned oldest first. */
async function eventsOf(name: string): Promise<StackEvent[]> {
  const page = await call(api.GET("/api/v1/stacks/{ref}/events", { params: { path: { ref: name },
    query: { limit: EVENT_LIMIT, before: LATEST } } }));
  return [...page].reverse();
}

function EventsTable({ events, error }: { events: StackEvent[] | undefined; error: unknown }) {
  const rows = [...(events ?? [])].reverse();
  return (
    <>
      <ErrorNote error={error} />
      <Table striped>
        <Table.Thead><Table.Tr><Table.Th>When</Table.Th><Table.Th>Resource</Table.Th><Table.Th>Action</Table.Th>
          <Table.Th>Status</Table.Th><Table.Th>Message</Table.Th><Table.Th>Job</Table.Th></Table.Tr></Table.Thead>
        <Table.Tbody>{rows.map((e) => (
          <Table.Tr key={e.id}><Table.Td>{when(e.created_at)}</Table.Td><Table.Td>{e.resource ?? "(stack)"}</Table.Td>
            <Table.Td>{e.action}</Table.Td><Table.Td>{e.status}</Table.Td><Table.Td>{e.message}</Table.Td>
            <Table.Td>{e.job_id ? <Anchor component={Link} to={`/jobs/${e.job_id}`}>#{e.job_id}</Anchor> : "—"}</Table.Td></Table.Tr>))}</Table.Tbody>
      </Table>
      {events && events.length >= EVENT_LIMIT && <Text size="xs" c="dimmed">The latest {EVENT_LIMIT} events are shown.</Text>}
    </>
  );
}

// ---------------------------------------------------------------- YAML text of a stored template

const RESERVED = /^(true|false|yes|no|on|off|y|n|null|~)$/i;

/** A scalar as YAML: plain when it cannot be read as anything else, otherwise double-quoted (JSON's quoting is YAML's). */
function scalar(v: unknown): string {
  if (v === null || v === undefined) return "null";
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  const s = String(v);
  const plain = /^[A-Za-z_/][\w./:@+=,()\- ]*$/.test(s) && !/[ :]$/.test(s) && !s.includes(": ") && !s.includes(" #")
    && !RESERVED.test(s);
  return plain ? s : JSON.stringify(s);
}

function isBlock(v: unknown): boolean {
  return typeof v === "object" && v !== null && Object.keys(v).length > 0;
}

function inline(v: unknown): string {
  return Array.isArray(v) ? "[]" : typeof v === "object" && v !== null ? "{}" : scalar(v);
}

/** Lines of ``v`` at ``indent`` (a mapping or a sequence); multi-line text as a literal block. */
function lines(v: unknown, indent: string): string[] {
  const after = (head: string, x: unknown): string[] => {
    if (isBlock(x)) return [head, ...lines(x, indent + "  ")];
    if (typeof x === "string" && x.includes("\n") && !/^\s/.test(x) && !x.includes("\r")) {
      const chomp = x.endsWith("\n") ? (x.endsWith("\n\n") ? "+" : "") : "-";
      const body = (x.endsWith("\n") ? x.slice(0, -1) : x).split("\n");
      return [`${head} |${chomp}`, ...body.map((l) => (l ? indent + "  " + l : ""))];
    }
    return [`${head} ${inline(x)}`];
  };
  if (Array.isArray(v)) {
    return v.flatMap((item) => {
      if (!isBlock(item)) return after(`${indent}-`, item);
      const sub = lines(item, indent + "  ");
      return [`${indent}- ${sub[0].slice(indent.length + 2)}`, ...sub.slice(1)];
    });
  }
  return Object.entries(v as Record<string, unknown>).flatMap(([k, x]) => after(`${indent}${scalar(k)}:`, x));
}

export function toYaml(v: unknown): string {
  return isBlock(v) ? lines(v, "").join("\n") + "\n" : inline(v) + "\n";
}
