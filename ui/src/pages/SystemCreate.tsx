// Define a system: a form, or the seed's YAML pasted as it is (the API accepts application/yaml bodies).
import { useState } from "react";
import { useNavigate } from "react-router-dom";
import { NumberInput, Select, SegmentedControl, TextInput, Textarea } from "@mantine/core";
import { api, call, fieldError, type S } from "../api/client";
import { PageTitle, parsePairs } from "../components/common";
import { CreatePanel } from "../components/Form";
import { useRefs } from "../components/refs";

export default function SystemCreate() {
  const refs = useRefs();
  const navigate = useNavigate();
  const [mode, setMode] = useState("form");
  const [f, setF] = useState({ hostname: "", environment: null as string | null, hypervisor: null as string | null, type: null as string | null,
    labels: "", os: "", cpu: "" as number | string, memory: "" });
  const [yaml, setYaml] = useState("env: dev\nmachine: {hostname: web1, os: debian-12}\nsimulated: {}\ntype: web\n");
  const set = (k: keyof typeof f) => (v: unknown) => setF({ ...f, [k]: v });
  const hvs = (refs.data?.hypervisors ?? []).filter((h) => !f.environment || h.environment.name === f.environment);
  return (
    <>
      <PageTitle>New system</PageTitle>
      <SegmentedControl mb="sm" value={mode} onChange={setMode} data={[{ value: "form", label: "Form" }, { value: "yaml", label: "Paste seed YAML" }]} />
      {mode === "form" ? (
        <CreatePanel title="System" onSubmit={async () => {
          const body: S["SystemCreate"] = { hostname: f.hostname, environment: f.environment ?? "", hypervisor: f.hypervisor, type: f.type,
            labels: parsePairs(f.labels), machine: { os: f.os || null, cpu: f.cpu === "" ? null : Number(f.cpu),
              memory: (f.memory || null) as unknown as number | null, addresses: [] } };
          const s = await call(api.POST("/api/v1/systems", { body }));
          navigate(`/systems/${s.id}`);
        }}>{(err) => (<>
          <TextInput label="Hostname" required value={f.hostname} onChange={(e) => set("hostname")(e.currentTarget.value)} error={fieldError(err, "hostname")} />
          <Select label="Environment" required data={(refs.data?.envs ?? []).map((e) => e.name)} value={f.environment} onChange={set("environment")} error={fieldError(err, "environment")} />
          <Select label="Hypervisor" data={hvs.map((h) => h.name)} value={f.hypervisor} onChange={set("hypervisor")} error={fieldError(err, "hypervisor")} />
          <Select label="Type" clearable data={(refs.data?.types ?? []).map((t) => t.name)} value={f.type} onChange={set("type")} error={fieldError(err, "type")} />
          <TextInput label="Labels" placeholder="tier=web, cell=a" value={f.labels} onChange={(e) => set("labels")(e.currentTarget.value)} error={fieldError(err, "labels")} />
          <TextInput label="OS" value={f.os} onChange={(e) => set("os")(e.currentTarget.value)} error={fieldError(err, "machine.os")} />
          <NumberInput label="CPUs" value={f.cpu} onChange={set("cpu")} error={fieldError(err, "machine.cpu")} />
          <TextInput label="Memory" placeholder="2G or MiB" value={f.memory} onChange={(e) => set("memory")(e.currentTarget.value)} error={fieldError(err, "machine.memory")} />
        </>)}</CreatePanel>
      ) : (
        <CreatePanel title="Seed YAML" onSubmit={async () => {
          const s = await call(api.POST("/api/v1/systems", {
            body: yaml as unknown as S["SystemCreate"], bodySerializer: (b: unknown) => b as string,
            headers: { "Content-Type": "application/yaml" } }));
          navigate(`/systems/${s.id}`);
        }}>{(err) => (
          <Textarea label="One system in the seed's shape" autosize minRows={6} value={yaml} onChange={(e) => setYaml(e.currentTarget.value)}
            error={fieldError(err, "body")} styles={{ input: { fontFamily: "monospace" } }} />
        )}</CreatePanel>
      )}
    </>
  );
}
