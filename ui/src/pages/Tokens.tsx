import { useState } from "react";
import { Alert, Button, Code, NumberInput, Table, TextInput } from "@mantine/core";
import { api, call, fieldError } from "../api/client";
import { ErrorNote, PageTitle } from "../components/common";
import { CreatePanel } from "../components/Form";
import { useLoad, when } from "../lib";

export default function Tokens() {
  const list = useLoad(() => call(api.GET("/api/v1/auth/tokens", { params: { query: { limit: 200 } } })), []);
  const [name, setName] = useState("");
  const [days, setDays] = useState<number | string>(90);
  const [created, setCreated] = useState<string | null>(null);
  const [error, setError] = useState<unknown>();
  return (
    <>
      <PageTitle>API tokens</PageTitle>
      <CreatePanel title="New token" onSubmit={async () => {
        const t = await call(api.POST("/api/v1/auth/tokens", { body: { name, expires_in_days: days === "" ? null : Number(days) } }));
        setCreated(t.token); setName(""); list.reload();
      }}>{(err) => (<>
        <TextInput label="Name" required value={name} onChange={(e) => setName(e.currentTarget.value)} error={fieldError(err, "name")} />
        <NumberInput label="Expires in days (empty: never)" value={days} onChange={setDays} error={fieldError(err, "expires_in_days")} />
      </>)}</CreatePanel>
      {created && <Alert mb="md" title="Copy it now: it is not shown again"><Code>{created}</Code></Alert>}
      <ErrorNote error={list.error ?? error} />
      <Table striped><Table.Thead><Table.Tr><Table.Th>Name</Table.Th><Table.Th>Kind</Table.Th><Table.Th>Prefix</Table.Th><Table.Th>Expires</Table.Th><Table.Th>Last used</Table.Th><Table.Th /></Table.Tr></Table.Thead>
        <Table.Tbody>{(list.data ?? []).map((t) => (
          <Table.Tr key={t.id}><Table.Td>{t.name}</Table.Td><Table.Td>{t.kind}</Table.Td><Table.Td><Code>{t.prefix}</Code></Table.Td>
            <Table.Td>{when(t.expires_at)}</Table.Td><Table.Td>{when(t.last_used_at)}</Table.Td>
            <Table.Td><Button size="xs" variant="default" onClick={async () => {
              try { await call(api.DELETE("/api/v1/auth/tokens/{token_id}", { params: { path: { token_id: t.id } } })); list.reload(); } catch (e) { setError(e); }
            }}>Revoke {t.name}</Button></Table.Td></Table.Tr>
        ))}</Table.Tbody></Table>
    </>
  );
}
