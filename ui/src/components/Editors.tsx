// Edit dialogs (PATCH) for the resources the create forms make. Each sends only what the form shows,
// with If-Match from the version it was opened at; the API's 422 lands on the field it names.
import { useEffect, useState } from "react";
import { Badge, Checkbox, Group, NumberInput, PasswordInput, Switch, Text, TextInput, Textarea } from "@mantine/core";
import { api, call, fieldError, type S } from "../api/client";
import { parsePairs } from "./common";
import { EditModal, ifMatch, jsonField, pretty } from "./Edit";
import { useLoad, when } from "../lib";

type Props<T> = { item: T | null; onClose: () => void; onSaved: () => void };
const pairs = (o: Record<string, unknown>) => Object.entries(o).map(([k, v]) => `${k}=${String(v)}`).join(", ");
const mono = { input: { fontFamily: "monospace" } };

/** Form state reset each time the dialog opens on an item. */
function useForm<T, F>(item: T | null, init: (item: T) => F): [F | null, (f: F) => void] {
  const [form, setForm] = useState<F | null>(null);
  // eslint-disable-next-line react-hooks/exhaustive-deps
  useEffect(() => { setForm(item ? init(item) : null); }, [item]);
  return [form, setForm];
}

export function EnvironmentEdit({ item, onClose, onSaved }: Props<S["EnvironmentOut"]>) {
  const [f, setF] = useForm(item, (e) => ({ name: e.name, description: e.description, requires_approval: e.requires_approval, variables: pretty(e.variables) }));
  return (
    <EditModal opened={!!item && !!f} title={`Edit environment ${item?.name}`} onClose={onClose} onSave={async () => {
      await call(api.PATCH("/api/v1/environments/{ref}", { params: { path: { ref: String(item!.id) } }, headers: ifMatch(item!.version), body: {
        name: f!.name, description: f!.description, requires_approval: f!.requires_approval, variables: jsonField(f!.variables, "variables") as S["EnvironmentUpdate"]["variables"] } }));
      onSaved();
    }}>{(err) => f && (<>
      <TextInput label="Name" required value={f.name} onChange={(e) => setF({ ...f, name: e.currentTarget.value })} error={fieldError(err, "name")} />
      <TextInput label="Description" value={f.description} onChange={(e) => setF({ ...f, description: e.currentTarget.value })} error={fieldError(err, "description")} />
      <Checkbox label="Remediation runs need an operator's approval" checked={f.requires_approval} onChange={(e) => setF({ ...f, requires_approval: e.currentTarget.checked })} />
      <Textarea label="Variables (JSON)" autosize minRows={3} styles={mono} value={f.variables} onChange={(e) => setF({ ...f, variables: e.currentTarget.value })} error={fieldError(err, "variables")} />
    </>)}</EditModal>
  );
}

/** Settings as JSON (the secrets are not in it: the API never returns them), and each secret replaced on its own. */
export function HypervisorEdit({ item, onClose, onSaved }: Props<S["HypervisorOut"]>) {
  const [f, setF] = useForm(item, (h) => ({ name: h.name, description: h.description, config: pretty(h.config), secrets: {} as Record<string, string> }));
  const driver = useLoad(async () => item ? call(api.GET("/api/v1/drivers/{name}", { params: { path: { name: item.driver } } })) : undefined, [item?.driver]);
  const secretFields = ((driver.data as Record<string, unknown> | undefined)?.secret_fields ?? []) as string[];
  return (
    <EditModal opened={!!item && !!f} title={`Edit hypervisor ${item?.name}`} onClose={onClose} onSave={async () => {
      const replaced = Object.fromEntries(Object.entries(f!.secrets).filter(([, v]) => v !== ""));
      await call(api.PATCH("/api/v1/hypervisors/{ref}", { params: { path: { ref: String(item!.id) } }, headers: ifMatch(item!.version), body: {
        name: f!.name, description: f!.description, config: { ...jsonField(f!.config, "config"), ...replaced } } }));
      onSaved();
    }}>{(err) => f && (<>
      <TextInput label="Name" required value={f.name} onChange={(e) => setF({ ...f, name: e.currentTarget.value })} error={fieldError(err, "name")} />
      <TextInput label="Description" value={f.description} onChange={(e) => setF({ ...f, description: e.currentTarget.value })} error={fieldError(err, "description")} />
      <Textarea label={`Settings of the ${item?.driver} driver (JSON; a null removes one)`} autosize minRows={3} styles={mono} value={f.config}
        onChange={(e) => setF({ ...f, config: e.currentTarget.value })} error={fieldError(err, "config") && !secretFields.some((s) => fieldError(err, `config.${s}`)) ? fieldError(err, "config") : undefined} />
      {secretFields.map((s) => {
        const set = item?.secrets_set.includes(s);
        return (
          <PasswordInput key={s} label={<Group gap={6} component="span">{`Replace ${s}`}<Badge size="xs" variant="light" autoContrast>{set ? "set" : "not set"}</Badge></Group>}
            autoComplete="new-password" placeholder={set ? "leave empty to keep the stored secret" : "write-only: never shown again"}
            value={f.secrets[s] ?? ""} onChange={(e) => setF({ ...f, secrets: { ...f.secrets, [s]: e.currentTarget.value } })} error={fieldError(err, `config.${s}`)} />
        );
      })}
    </>)}</EditModal>
  );
}

export function TypeEdit({ item, onClose, onSaved }: Props<S["TypeOut"]>) {
  const [f, setF] = useForm(item, (t) => ({ name: t.name, description: t.description, spec: pretty(t.provisioner.spec), variables: pretty(t.variables) }));
  return (
    <EditModal opened={!!item && !!f} title={`Edit type ${item?.name}`} onClose={onClose} onSave={async () => {
      await call(api.PATCH("/api/v1/types/{ref}", { params: { path: { ref: String(item!.id) } }, headers: ifMatch(item!.version), body: {
        name: f!.name, description: f!.description, variables: jsonField(f!.variables, "variables") as S["TypeUpdate"]["variables"],
        provisioner: { kind: item!.provisioner.kind, spec: jsonField(f!.spec, "provisioner.spec") } } }));
      onSaved();
    }}>{(err) => f && (<>
      <TextInput label="Name" required value={f.name} onChange={(e) => setF({ ...f, name: e.currentTarget.value })} error={fieldError(err, "name")} />
      <TextInput label="Description" value={f.description} onChange={(e) => setF({ ...f, description: e.currentTarget.value })} error={fieldError(err, "description")} />
      <Textarea label={`Provisioner spec (${item?.provisioner.kind}, JSON)`} autosize minRows={3} styles={mono} value={f.spec}
        onChange={(e) => setF({ ...f, spec: e.currentTarget.value })} error={fieldError(err, "provisioner.spec") ?? fieldError(err, "provisioner")} />
      <Textarea label="Default variables (JSON)" autosize styles={mono} value={f.variables} onChange={(e) => setF({ ...f, variables: e.currentTarget.value })} error={fieldError(err, "variables")} />
    </>)}</EditModal>
  );
}

export function SystemEdit({ item, onClose, onSaved }: Props<S["SystemOut"]>) {
  const [f, setF] = useForm(item, (s) => ({ hostname: s.hostname, owner: s.owner ?? "", labels: pairs(s.labels), variables: pretty(s.variables),
    cpu: (s.machine as { cpu?: number }).cpu ?? "", memory: (s.machine as { memory?: number }).memory ?? "" as number | string }));
  return (
    <EditModal opened={!!item && !!f} title={`Edit system ${item?.hostname}`} onClose={onClose} onSave={async () => {
      await call(api.PATCH("/api/v1/systems/{ref}", { params: { path: { ref: String(item!.id) } }, headers: ifMatch(item!.version), body: {
        hostname: f!.hostname, owner: f!.owner || null, labels: parsePairs(f!.labels), variables: jsonField(f!.variables, "variables") as S["SystemUpdate"]["variables"],
        machine: { cpu: f!.cpu === "" ? null : Number(f!.cpu), memory: f!.memory === "" ? null : Number(f!.memory) } } }));
      onSaved();
    }}>{(err) => f && (<>
      <TextInput label="Hostname" required value={f.hostname} onChange={(e) => setF({ ...f, hostname: e.currentTarget.value })} error={fieldError(err, "hostname")} />
      <TextInput label="Owner" value={f.owner} onChange={(e) => setF({ ...f, owner: e.currentTarget.value })} error={fieldError(err, "owner")} />
      <Group grow>
        <NumberInput label="CPUs" min={1} value={f.cpu} onChange={(v) => setF({ ...f, cpu: v })} error={fieldError(err, "machine.cpu")} />
        <NumberInput label="Memory (MiB)" min={1} value={f.memory} onChange={(v) => setF({ ...f, memory: v })} error={fieldError(err, "machine.memory")} />
      </Group>
      <TextInput label="Labels (k=v, k2=v2)" value={f.labels} onChange={(e) => setF({ ...f, labels: e.currentTarget.value })} error={fieldError(err, "labels")} />
      <Textarea label="Variables (JSON)" autosize minRows={3} styles={mono} value={f.variables} onChange={(e) => setF({ ...f, variables: e.currentTarget.value })} error={fieldError(err, "variables")} />
      <Text size="xs" c="dimmed">A change to the machine takes effect on the next reload (recreate).</Text>
    </>)}</EditModal>
  );
}

export function GroupEdit({ item, onClose, onSaved }: Props<S["GroupOut"]>) {
  const [f, setF] = useForm(item, (g) => ({ name: g.name, description: g.description, priority: g.priority as number | string, selector: pairs(g.selector), variables: pretty(g.variables) }));
  return (
    <EditModal opened={!!item && !!f} title={`Edit group ${item?.name}`} onClose={onClose} onSave={async () => {
      await call(api.PATCH("/api/v1/groups/{ref}", { params: { path: { ref: String(item!.id) } }, headers: ifMatch(item!.version), body: {
        name: f!.name, description: f!.description, priority: Number(f!.priority) || 0, selector: parsePairs(f!.selector),
        variables: jsonField(f!.variables, "variables") as S["GroupUpdate"]["variables"] } }));
      onSaved();
    }}>{(err) => f && (<>
      <TextInput label="Name" required value={f.name} onChange={(e) => setF({ ...f, name: e.currentTarget.value })} error={fieldError(err, "name")} />
      <TextInput label="Description" value={f.description} onChange={(e) => setF({ ...f, description: e.currentTarget.value })} error={fieldError(err, "description")} />
      <TextInput label="Members: labels they all carry" value={f.selector} onChange={(e) => setF({ ...f, selector: e.currentTarget.value })} error={fieldError(err, "selector")} />
      <NumberInput label="Priority" value={f.priority} onChange={(v) => setF({ ...f, priority: v })} error={fieldError(err, "priority")} />
      <Textarea label="Variables (JSON)" autosize minRows={3} styles={mono} value={f.variables} onChange={(e) => setF({ ...f, variables: e.currentTarget.value })} error={fieldError(err, "variables")} />
    </>)}</EditModal>
  );
}

/** The API computes fire times only for a saved schedule: the dialog shows the next one after saving. */
export function ScheduleEdit({ item, onClose, onSaved }: Props<S["ScheduleOut"]>) {
  const [f, setF] = useForm(item, (s) => ({ cron: s.cron, timezone: s.timezone, enabled: s.enabled }));
  const [next, setNext] = useState<string | null>(null);
  useEffect(() => setNext(null), [item]);
  return (
    <EditModal opened={!!item && !!f} title={`Edit schedule ${item?.name}`} onClose={onClose} onSave={async () => {
      const saved = await call(api.PATCH("/api/v1/schedules/{ref}", { params: { path: { ref: String(item!.id) } }, body: { cron: f!.cron, timezone: f!.timezone, enabled: f!.enabled } }));
      setNext(saved.next_run_at);
      onSaved();
    }}>{(err) => f && (<>
      <TextInput label="Cron (minute hour day month weekday)" required value={f.cron} onChange={(e) => setF({ ...f, cron: e.currentTarget.value })} error={fieldError(err, "cron")}
        description={`Next fire time now: ${when(next ?? item?.next_run_at)}`} />
      <TextInput label="Time zone" value={f.timezone} onChange={(e) => setF({ ...f, timezone: e.currentTarget.value })} error={fieldError(err, "timezone")} />
      <Switch label="Enabled" checked={f.enabled} onChange={(e) => setF({ ...f, enabled: e.currentTarget.checked })} />
    </>)}</EditModal>
  );
}
