// Users, their grants with quotas and usage bars; create users and grant roles.
import { useState } from "react";
import { Badge, Checkbox, Group, NumberInput, Paper, PasswordInput, Progress, Select, Table, Text, TextInput } from "@mantine/core";
import { api, call, fieldError } from "../api/client";
import { ErrorNote, PageTitle } from "../components/common";
import { CreatePanel } from "../components/Form";
import { useLoad } from "../lib";
import { quotaRows } from "./Dashboard";

export default function Users() {
  const list = useLoad(() => call(api.GET("/api/v1/users", { params: { query: { limit: 1000 } } })), []);
  const envs = useLoad(() => call(api.GET("/api/v1/environments", { params: { query: { limit: 1000 } } })), []);
  const [u, setU] = useState({ name: "", password: "", admin: false });
  const [g, setG] = useState({ user: null as string | null, env: null as string | null, role: "user" as string, max_systems: "" as number | string, max_cpu: "" as number | string });
  const num = (v: number | string) => (v === "" ? null : Number(v));
  return (
    <>
      <PageTitle>Users &amp; grants</PageTitle>
      <Group align="flex-start" grow>
        <CreatePanel title="New local user" onSubmit={async () => {
          await call(api.POST("/api/v1/users", { body: { name: u.name, password: u.password, admin: u.admin } }));
          setU({ name: "", password: "", admin: false }); list.reload();
        }}>{(err) => (<>
          <TextInput label="Name" required value={u.name} onChange={(e) => setU({ ...u, name: e.currentTarget.value })} error={fieldError(err, "name")} />
          <PasswordInput label="Password" autoComplete="new-password" value={u.password} onChange={(e) => setU({ ...u, password: e.currentTarget.value })} error={fieldError(err, "password")} />
          <Checkbox label="Administrator" checked={u.admin} onChange={(e) => setU({ ...u, admin: e.currentTarget.checked })} />
        </>)}</CreatePanel>
        <CreatePanel title="Grant a role" submitLabel="Grant" onSubmit={async () => {
          await call(api.PUT("/api/v1/users/{ref}/roles/{environment}", { params: { path: { ref: g.user ?? "", environment: g.env ?? "" } },
            body: { role: g.role as "user", max_systems: num(g.max_systems), max_cpu: num(g.max_cpu) } }));
          list.reload();
        }}>{(err) => (<>
          <Select label="User" required data={(list.data?.items ?? []).map((x) => x.name)} value={g.user} onChange={(v) => setG({ ...g, user: v })} />
          <Select label="Environment" required data={(envs.data?.items ?? []).map((x) => x.name)} value={g.env} onChange={(v) => setG({ ...g, env: v })} />
          <Select label="Role" data={["viewer", "user", "operator"]} value={g.role} onChange={(v) => setG({ ...g, role: v ?? "user" })} error={fieldError(err, "role")} />
          <NumberInput label="Max systems" value={g.max_systems} onChange={(v) => setG({ ...g, max_systems: v })} error={fieldError(err, "max_systems")} />
          <NumberInput label="Max CPUs" value={g.max_cpu} onChange={(v) => setG({ ...g, max_cpu: v })} error={fieldError(err, "max_cpu")} />
        </>)}</CreatePanel>
      </Group>
      <ErrorNote error={list.error} />
      {(list.data?.items ?? []).map((x) => (
        <Paper key={x.id} withBorder p="sm" mb="xs">
          <Group gap="xs"><Text fw={600}>{x.name}</Text>{x.admin && <Badge autoContrast>admin</Badge>}<Badge variant="outline" autoContrast>{x.source}</Badge>
            {!x.active && <Badge color="red" autoContrast>inactive</Badge>}</Group>
          <Table mt="xs"><Table.Tbody>{x.roles.map((r) => (
            <Table.Tr key={r.environment}><Table.Td w={140}>{r.environment}</Table.Td><Table.Td w={100}>{r.role}</Table.Td>
              <Table.Td>{quotaRows(x.name, r).map((q) => <div key={q.key}><Text size="xs">{q.label}</Text><Progress value={q.pct} aria-label={q.label} color={q.pct >= 90 ? "red" : undefined} /></div>)}
                {quotaRows(x.name, r).length === 0 && <Text size="xs" c="dimmed">no quota</Text>}</Table.Td></Table.Tr>
          ))}</Table.Tbody></Table>
        </Paper>
      ))}
    </>
  );
}
