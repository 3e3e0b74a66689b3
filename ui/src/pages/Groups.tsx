import { useState } from "react";
import { Button, Code, NumberInput, Table, TextInput, Textarea } from "@mantine/core";
import { api, call, fieldError, type S } from "../api/client";
import { useAuth } from "../auth";
import { ErrorNote, PageTitle, parseJson, parsePairs } from "../components/common";
import { CreatePanel } from "../components/Form";
import { GroupEdit } from "../components/Editors";
import { useLoad } from "../lib";

export default function Groups() {
  const { me } = useAuth();
  const list = useLoad(() => call(api.GET("/api/v1/groups", { params: { query: { limit: 1000 } } })), []);
  const [name, setName] = useState("");
  const [selector, setSelector] = useState("");
  const [priority, setPriority] = useState<number>(0);
  const [vars, setVars] = useState("");
  const [editing, setEditing] = useState<S["GroupOut"] | null>(null);
  return (
    <>
      <PageTitle>Groups</PageTitle>
      {me?.admin && (
        <CreatePanel title="New group" onSubmit={async () => {
          await call(api.POST("/api/v1/groups", { body: { name, selector: parsePairs(selector), priority, variables: parseJson(vars, "Variables") as S["GroupCreate"]["variables"] } }));
          setName(""); setSelector(""); list.reload();
        }}>{(err) => (<>
          <TextInput label="Name" required value={name} onChange={(e) => setName(e.currentTarget.value)} error={fieldError(err, "name")} />
          <TextInput label="Members: labels they all carry" placeholder="tier=web, cell=a" value={selector} onChange={(e) => setSelector(e.currentTarget.value)} error={fieldError(err, "selector")} />
          <NumberInput label="Priority" value={priority} onChange={(v) => setPriority(Number(v) || 0)} error={fieldError(err, "priority")} />
          <Textarea label="Variables (JSON)" autosize value={vars} onChange={(e) => setVars(e.currentTarget.value)} error={fieldError(err, "variables")} />
        </>)}</CreatePanel>
      )}
      <ErrorNote error={list.error} />
      <Table striped><Table.Thead><Table.Tr><Table.Th>Name</Table.Th><Table.Th>Selector</Table.Th><Table.Th>Priority</Table.Th><Table.Th>Variables</Table.Th>{me?.admin && <Table.Th />}</Table.Tr></Table.Thead>
        <Table.Tbody>{(list.data?.items ?? []).map((g) => (
          <Table.Tr key={g.id}><Table.Td>{g.name}</Table.Td><Table.Td>{Object.entries(g.selector).map(([k, v]) => `${k}=${v}`).join(", ")}</Table.Td>
            <Table.Td>{g.priority}</Table.Td><Table.Td><Code>{JSON.stringify(g.variables)}</Code></Table.Td>
            {me?.admin && <Table.Td><Button size="xs" variant="default" onClick={() => setEditing(g)}>Edit {g.name}</Button></Table.Td>}</Table.Tr>
        ))}</Table.Tbody></Table>
      <GroupEdit item={editing} onClose={() => setEditing(null)} onSaved={() => { setEditing(null); list.reload(); }} />
    </>
  );
}
