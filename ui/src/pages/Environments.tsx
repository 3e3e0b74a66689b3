import { useState } from "react";
import { Link } from "react-router-dom";
import { Anchor, Badge, Button, Table, Text, TextInput } from "@mantine/core";
import { api, call, fieldError, type S } from "../api/client";
import { useAuth } from "../auth";
import { Confirm, ErrorNote, PageTitle } from "../components/common";
import { CreatePanel } from "../components/Form";
import { EnvironmentEdit } from "../components/Editors";
import { roleIn, useLoad, when } from "../lib";

export default function Environments() {
  const { me } = useAuth();
  const list = useLoad(() => call(api.GET("/api/v1/environments", { params: { query: { limit: 1000 } } })), []);
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [locking, setLocking] = useState<S["EnvironmentOut"] | null>(null);
  const [reason, setReason] = useState("");
  const [actionError, setActionError] = useState<unknown>();
  const [editing, setEditing] = useState<S["EnvironmentOut"] | null>(null);
  return (
    <>
      <PageTitle>Environments</PageTitle>
      {me?.admin && (
        <CreatePanel title="New environment" onSubmit={async () => {
          await call(api.POST("/api/v1/environments", { body: { name, description } }));
          setName(""); setDescription(""); list.reload();
        }}>{(err) => (<>
          <TextInput label="Name" required value={name} onChange={(e) => setName(e.currentTarget.value)} error={fieldError(err, "name")} />
          <TextInput label="Description" value={description} onChange={(e) => setDescription(e.currentTarget.value)} error={fieldError(err, "description")} />
        </>)}</CreatePanel>
      )}
      <ErrorNote error={list.error ?? actionError} />
      <Table striped><Table.Thead><Table.Tr><Table.Th>Name</Table.Th><Table.Th>Description</Table.Th><Table.Th>Lock</Table.Th><Table.Th>Your role</Table.Th><Table.Th /></Table.Tr></Table.Thead>
        <Table.Tbody>{(list.data?.items ?? []).map((e) => {
          const role = roleIn(me, e.id);
          const mayLock = role === "admin" || role === "operator";
          return (
            <Table.Tr key={e.id}>
              <Table.Td><Anchor component={Link} to={`/systems?environment=${e.name}`}>{e.name}</Anchor></Table.Td>
              <Table.Td>{e.description}</Table.Td>
              <Table.Td>{e.locked ? <><Badge color="orange" autoContrast>locked</Badge> <Text span size="sm">by {e.locked_by} at {when(e.locked_at)}: {e.lock_reason}</Text></> : "—"}</Table.Td>
              <Table.Td>{role ?? "—"}</Table.Td>
              <Table.Td>{me?.admin && <Button size="xs" variant="default" mr="xs" onClick={() => setEditing(e)}>Edit {e.name}</Button>}{mayLock && (e.locked
                ? <Button size="xs" variant="default" onClick={async () => {
                    try { await call(api.POST("/api/v1/environments/{ref}/unlock", { params: { path: { ref: String(e.id) } } })); setActionError(undefined); list.reload(); } catch (x) { setActionError(x); }
                  }}>Unlock {e.name}</Button>
                : <Button size="xs" variant="default" onClick={() => { setReason(""); setLocking(e); }}>Lock {e.name}</Button>)}</Table.Td>
            </Table.Tr>
          );
        })}</Table.Tbody></Table>
      <EnvironmentEdit item={editing} onClose={() => setEditing(null)} onSaved={() => { setEditing(null); list.reload(); }} />
      <Confirm opened={!!locking} title={`Lock ${locking?.name}`} confirmLabel="Lock" onCancel={() => setLocking(null)}
        onConfirm={async () => {
          await call(api.POST("/api/v1/environments/{ref}/lock", { params: { path: { ref: String(locking!.id) } }, body: { reason } }));
          setLocking(null); list.reload();
        }}>
        <Text size="sm">Every change but an admin's is refused (409) while the lock holds.</Text>
        <TextInput label="Reason" required value={reason} onChange={(e) => setReason(e.currentTarget.value)} />
      </Confirm>
    </>
  );
}
