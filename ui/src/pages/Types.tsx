import { useState } from "react";
import { Button, Code, Select, Table, TextInput, Textarea } from "@mantine/core";
import { api, call, fieldError, type S } from "../api/client";
import { useAuth } from "../auth";
import { ErrorNote, PageTitle, parseJson } from "../components/common";
import { CreatePanel } from "../components/Form";
import { TypeEdit } from "../components/Editors";
import { useLoad } from "../lib";

const KINDS = ["none", "script", "ansible", "puppet", "salt"] as const;

export default function Types() {
  const { me } = useAuth();
  const list = useLoad(() => call(api.GET("/api/v1/types", { params: { query: { limit: 1000 } } })), []);
  const [name, setName] = useState("");
  const [kind, setKind] = useState<string>("script");
  const [spec, setSpec] = useState('{"scripts": [{"name": "install", "inline": "echo installing"}]}');
  const [vars, setVars] = useState("");
  const [editing, setEditing] = useState<S["TypeOut"] | null>(null);
  return (
    <>
      <PageTitle>Types</PageTitle>
      {me?.admin && (
        <CreatePanel title="New type" onSubmit={async () => {
          await call(api.POST("/api/v1/types", { body: {
            name, provisioner: { kind: kind as S["ProvisionerSpec"]["kind"], spec: parseJson(spec, "Provisioner spec") }, variables: parseJson(vars, "Variables") as S["TypeCreate"]["variables"] } }));
          setName(""); list.reload();
        }}>{(err) => (<>
          <TextInput label="Name" required value={name} onChange={(e) => setName(e.currentTarget.value)} error={fieldError(err, "name")} />
          <Select label="Provisioner" data={[...KINDS]} value={kind} onChange={(v) => setKind(v ?? "none")} error={fieldError(err, "provisioner.kind")} />
          <Textarea label="Provisioner spec (JSON)" autosize minRows={3} value={spec} onChange={(e) => setSpec(e.currentTarget.value)}
            error={fieldError(err, "provisioner.spec") ?? fieldError(err, "provisioner")} styles={{ input: { fontFamily: "monospace" } }} />
          <Textarea label="Default variables (JSON)" autosize value={vars} onChange={(e) => setVars(e.currentTarget.value)} error={fieldError(err, "variables")} />
        </>)}</CreatePanel>
      )}
      <ErrorNote error={list.error} />
      <Table striped><Table.Thead><Table.Tr><Table.Th>Name</Table.Th><Table.Th>Provisioner</Table.Th><Table.Th>Variables</Table.Th>{me?.admin && <Table.Th />}</Table.Tr></Table.Thead>
        <Table.Tbody>{(list.data?.items ?? []).map((t) => (
          <Table.Tr key={t.id}><Table.Td>{t.name}</Table.Td><Table.Td>{t.provisioner.kind}</Table.Td><Table.Td><Code>{JSON.stringify(t.variables)}</Code></Table.Td>
            {me?.admin && <Table.Td><Button size="xs" variant="default" onClick={() => setEditing(t)}>Edit {t.name}</Button></Table.Td>}</Table.Tr>
        ))}</Table.Tbody></Table>
      <TypeEdit item={editing} onClose={() => setEditing(null)} onSaved={() => { setEditing(null); list.reload(); }} />
    </>
  );
}
