import { useState } from "react";
import { Alert, Button, Code, Group, NumberInput, Table, Text, TextInput, Title } from "@mantine/core";
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
      <ChatAccounts />
    </>
  );
}

/** Chat accounts (issue 18): a one-time code to send to the bot privately, and the accounts linked to you. */
function ChatAccounts() {
  const accounts = useLoad(() => call(api.GET("/api/v1/chat/accounts")), []);
  const [code, setCode] = useState<{ code: string; expires_at: string } | null>(null);
  const [error, setError] = useState<unknown>();
  return (
    <>
      <Group justify="space-between" mt="xl" mb="xs">
        <Title order={3} size="h4">Chat accounts</Title>
        <Button variant="default" onClick={async () => {
          try { setCode(await call(api.POST("/api/v1/chat/link-codes"))); } catch (e) { setError(e); }
        }}>Link a chat account</Button>
      </Group>
      <Text size="sm" c="dimmed" mb="xs">A linked IRC nick or XMPP address acts as you in chat, with your roles.</Text>
      {code && <Alert mb="md" title="Send this to the bot in a private message (it works once)">
        <Code>link {code.code}</Code> — until {when(code.expires_at)}</Alert>}
      <ErrorNote error={accounts.error ?? error} />
      <Table striped><Table.Thead><Table.Tr><Table.Th>Connection</Table.Th><Table.Th>Account</Table.Th><Table.Th>Linked</Table.Th><Table.Th /></Table.Tr></Table.Thead>
        <Table.Tbody>{(accounts.data ?? []).map((a) => (
          <Table.Tr key={a.id}><Table.Td>{a.connection}</Table.Td><Table.Td>{a.account}</Table.Td><Table.Td>{when(a.linked_at)}</Table.Td>
            <Table.Td><Button size="xs" variant="default" onClick={async () => {
              try { await call(api.DELETE("/api/v1/chat/accounts/{account_id}", { params: { path: { account_id: a.id } } })); accounts.reload(); } catch (e) { setError(e); }
            }}>Unlink {a.account}</Button></Table.Td></Table.Tr>
        ))}</Table.Tbody></Table>
    </>
  );
}
