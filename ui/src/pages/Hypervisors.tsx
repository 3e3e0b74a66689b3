// Hypervisors, and a create form whose fields come from the driver's settings schema (GET /drivers/{name});
// secret fields are write-only: the API only says whether they are set.
import { useState } from "react";
import { Badge, Button, Checkbox, NumberInput, PasswordInput, Select, Table, TextInput, Textarea } from "@mantine/core";
import { api, call, fieldError, type S } from "../api/client";
import { HypervisorEdit } from "../components/Editors";
import { useAuth } from "../auth";
import { ErrorNote, PageTitle } from "../components/common";
import { CreatePanel } from "../components/Form";
import { useLoad } from "../lib";

interface JsonSchema { properties?: Record<string, Prop>; required?: string[] }
interface Prop { type?: string; anyOf?: Prop[]; title?: string; description?: string; default?: unknown; enum?: string[]; writeOnly?: boolean; secret?: boolean }

function baseType(p: Prop): string {
  return p.type ?? p.anyOf?.find((x) => x.type && x.type !== "null")?.type ?? "string";
}

export default function Hypervisors() {
  const { me } = useAuth();
  const list = useLoad(() => call(api.GET("/api/v1/hypervisors", { params: { query: { limit: 1000 } } })), []);
  const envs = useLoad(() => call(api.GET("/api/v1/environments", { params: { query: { limit: 1000 } } })), []);
  const drivers = useLoad(() => call(api.GET("/api/v1/drivers")), []);
  const [name, setName] = useState("");
  const [env, setEnv] = useState<string | null>(null);
  const [driver, setDriver] = useState<string | null>(null);
  const [config, setConfig] = useState<Record<string, unknown>>({});
  const [editing, setEditing] = useState<S["HypervisorOut"] | null>(null);
  const schema = useLoad(async () => driver ? call(api.GET("/api/v1/drivers/{name}", { params: { path: { name: driver } } })) : undefined, [driver]);
  const cfg = ((schema.data as Record<string, unknown> | undefined)?.config_schema ?? {}) as JsonSchema;
  const secrets = new Set(((schema.data as Record<string, unknown> | undefined)?.secret_fields ?? []) as string[]);
  const driverNames = ((drivers.data ?? []) as unknown as { name: string; broken?: boolean }[]).filter((d) => !d.broken).map((d) => d.name);

  return (
    <>
      <PageTitle>Hypervisors</PageTitle>
      {me?.admin && (
        <CreatePanel title="New hypervisor" onSubmit={async () => {
          await call(api.POST("/api/v1/hypervisors", { body: { name, environment: env ?? "", driver: driver ?? "", config } }));
          setName(""); setConfig({}); list.reload();
        }}>{(err) => (<>
          <TextInput label="Name" required value={name} onChange={(e) => setName(e.currentTarget.value)} error={fieldError(err, "name")} />
          <Select label="Environment" required data={(envs.data?.items ?? []).map((e) => e.name)} value={env} onChange={setEnv} error={fieldError(err, "environment")} />
          <Select label="Driver" required data={driverNames} value={driver} onChange={(d) => { setDriver(d); setConfig({}); }} error={fieldError(err, "driver")} />
          <ErrorNote error={schema.error} />
          {Object.entries(cfg.properties ?? {}).map(([key, p]) => {
            const label = p.title ?? key;
            const common = { key, label, description: p.description, required: cfg.required?.includes(key), error: fieldError(err, `config.${key}`) };
            const set = (v: unknown) => setConfig((c) => { const n = { ...c }; if (v === "" || v === undefined) delete n[key]; else n[key] = v; return n; });
            if (secrets.has(key) || p.writeOnly) return <PasswordInput {...common} autoComplete="new-password" placeholder="write-only: never shown again" value={String(config[key] ?? "")} onChange={(e) => set(e.currentTarget.value)} />;
            if (p.enum) return <Select {...common} data={p.enum} value={(config[key] as string) ?? null} onChange={set} placeholder={p.default != null ? String(p.default) : undefined} />;
            const t = baseType(p);
            if (t === "boolean") return <Checkbox key={key} label={label} description={p.description} checked={Boolean(config[key] ?? p.default)} onChange={(e) => set(e.currentTarget.checked)} />;
            if (t === "integer" || t === "number") return <NumberInput {...common} value={(config[key] as number) ?? ""} placeholder={p.default != null ? String(p.default) : undefined} onChange={(v) => set(v === "" ? undefined : v)} />;
            if (t === "object" || t === "array") return <Textarea {...common} autosize placeholder="JSON" onChange={(e) => { try { set(e.currentTarget.value ? JSON.parse(e.currentTarget.value) : undefined); } catch { /* shown by the API on submit */ } }} />;
            return <TextInput {...common} value={String(config[key] ?? "")} placeholder={p.default != null ? String(p.default) : undefined} onChange={(e) => set(e.currentTarget.value)} />;
          })}
        </>)}</CreatePanel>
      )}
      <ErrorNote error={list.error} />
      <Table striped><Table.Thead><Table.Tr><Table.Th>Name</Table.Th><Table.Th>Environment</Table.Th><Table.Th>Driver</Table.Th><Table.Th>Secrets</Table.Th>{me?.admin && <Table.Th />}</Table.Tr></Table.Thead>
        <Table.Tbody>{(list.data?.items ?? []).map((h) => (
          <Table.Tr key={h.id}><Table.Td>{h.name}</Table.Td><Table.Td>{h.environment.name}</Table.Td><Table.Td>{h.driver}</Table.Td>
            <Table.Td>{h.secrets_set.map((s) => <Badge key={s} mr={4} variant="light" autoContrast>{s}: set</Badge>)}</Table.Td>
            {me?.admin && <Table.Td><Button size="xs" variant="default" onClick={() => setEditing(h)}>Edit {h.name}</Button></Table.Td>}</Table.Tr>
        ))}</Table.Tbody></Table>
      <HypervisorEdit item={editing} onClose={() => setEditing(null)} onSaved={() => { setEditing(null); list.reload(); }} />
    </>
  );
}
