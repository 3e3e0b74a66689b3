// What needs a look: systems by state and environment, running and recently failed jobs, locked
// environments, quotas near their limit, the attention queue.
import { Link } from "react-router-dom";
import { Anchor, Badge, Group, Paper, Progress, SimpleGrid, Table, Text, Title } from "@mantine/core";
import { api, call, cursorOf, type S } from "../api/client";
import { useAuth } from "../auth";
import { ErrorNote, PageTitle, StateBadge } from "../components/common";
import { STATES, useLoad, when } from "../lib";

const CAP = 1000;

/** Count systems matching a filter, up to CAP (the API has no count yet: one page of ids at most). */
async function countSystems(query: Record<string, string>): Promise<string> {
  const p = await call(api.GET("/api/v1/systems", { params: { query: { ...query, limit: CAP } } }));
  return cursorOf(p.next) ? `${CAP}+` : String(p.items.length);
}

export default function Dashboard() {
  const { me } = useAuth();
  const envs = useLoad(() => call(api.GET("/api/v1/environments", { params: { query: { limit: 100 } } })), []);
  const byState = useLoad(async () => Object.fromEntries(await Promise.all(STATES.map(async (s) => [s, await countSystems({ state: s })] as const))), []);
  const byEnv = useLoad(async () => envs.data
    ? Object.fromEntries(await Promise.all(envs.data.items.map(async (e) => [e.name, await countSystems({ environment: e.name })] as const))) : {}, [envs.data]);
  const running = useLoad(() => call(api.GET("/api/v1/jobs", { params: { query: { status: "running", limit: 10 } } })), []);
  const failed = useLoad(() => call(api.GET("/api/v1/jobs", { params: { query: { status: "failed", limit: 10 } } })), []);
  const users = useLoad(async () => me?.admin ? (await call(api.GET("/api/v1/users", { params: { query: { limit: 200 } } }))).items : me ? [me] : [], [me]);
  const near = (users.data ?? []).flatMap((u) => u.roles.flatMap((g) => quotaRows(u.name, g))).filter((r) => r.pct >= 80);
  const locked = (envs.data?.items ?? []).filter((e) => e.locked);
  const attention = useLoad(async () => {
    const p = await call(api.GET("/api/v1/attention", { params: { query: { status: "unresolved", limit: 100 } } }));
    return { count: cursorOf(p.next) ? "100+" : String(p.items.length), open: p.items.filter((i) => i.status === "open").length };
  }, []);

  return (
    <>
      <PageTitle>Dashboard</PageTitle>
      <ErrorNote error={envs.error ?? byState.error ?? running.error} />
      <SimpleGrid cols={{ base: 1, md: 2 }}>
        <Paper withBorder p="sm">
          <Title order={3} size="h5" mb="xs">Systems by state</Title>
          <Group gap="xs">{STATES.map((s) => (
            <Anchor key={s} component={Link} to={`/systems?state=${s}`} underline="never">
              <Group gap={4}><StateBadge value={s} /><Text size="sm" data-testid={`count-${s}`}>{byState.data?.[s] ?? "…"}</Text></Group>
            </Anchor>
          ))}</Group>
        </Paper>
        <Paper withBorder p="sm">
          <Title order={3} size="h5" mb="xs">Systems by environment</Title>
          <Table><Table.Tbody>{(envs.data?.items ?? []).map((e) => (
            <Table.Tr key={e.id}><Table.Td><Anchor component={Link} to={`/systems?environment=${e.name}`}>{e.name}</Anchor></Table.Td>
              <Table.Td>{byEnv.data?.[e.name] ?? "…"}</Table.Td><Table.Td>{e.locked && <Badge color="orange" autoContrast>locked</Badge>}</Table.Td></Table.Tr>
          ))}</Table.Tbody></Table>
        </Paper>
        <Paper withBorder p="sm">
          <Title order={3} size="h5" mb="xs">Attention queue</Title>
          <ErrorNote error={attention.error} />
          <Text size="sm"><Anchor component={Link} to="/attention" data-testid="attention-count">{attention.data?.count ?? "…"} unresolved</Anchor>
            {attention.data && attention.data.open > 0 && ` (${attention.data.open} not yet acknowledged)`}: systems an automatic fix could not repair.</Text>
        </Paper>
        <JobList title="Running jobs" jobs={running.data?.items} empty="Nothing running." />
        <JobList title="Recently failed jobs" jobs={failed.data?.items} empty="No failures." />
        <Paper withBorder p="sm">
          <Title order={3} size="h5" mb="xs">Locked environments</Title>
          {locked.length === 0 && <Text size="sm" c="dimmed">None.</Text>}
          {locked.map((e) => <Text key={e.id} size="sm"><b>{e.name}</b>: locked by {e.locked_by ?? "?"} at {when(e.locked_at)} — {e.lock_reason}</Text>)}
        </Paper>
        <Paper withBorder p="sm">
          <Title order={3} size="h5" mb="xs">Quotas near their limit</Title>
          {near.length === 0 && <Text size="sm" c="dimmed">None above 80 %.</Text>}
          {near.map((r) => (
            <div key={r.key}><Text size="sm">{r.label}</Text>
              <Progress value={r.pct} color={r.pct >= 100 ? "red" : "orange"} aria-label={r.label} /></div>
          ))}
        </Paper>
      </SimpleGrid>
    </>
  );
}

export function quotaRows(user: string, g: S["GrantOut"]) {
  const rows = [
    ["systems", g.usage.systems, g.quota.max_systems],
    ["cpu", g.usage.cpu, g.quota.max_cpu],
    ["memory MiB", g.usage.memory_mb, g.quota.max_memory_mb],
  ] as const;
  return rows.filter(([, , max]) => max != null && max > 0).map(([what, used, max]) => ({
    key: `${user}-${g.environment}-${what}`, pct: Math.min(100, (100 * used) / (max as number)),
    label: `${user} in ${g.environment}: ${used} of ${max} ${what}`,
  }));
}

function JobList({ title, jobs, empty }: { title: string; jobs?: S["JobOut"][]; empty: string }) {
  return (
    <Paper withBorder p="sm">
      <Title order={3} size="h5" mb="xs">{title}</Title>
      {jobs?.length === 0 && <Text size="sm" c="dimmed">{empty}</Text>}
      {jobs?.map((j) => (
        <Group key={j.id} gap="xs"><Anchor component={Link} to={`/jobs/${j.id}`}>#{j.id} {j.action}</Anchor>
          <StateBadge value={j.status} /><Text size="xs" c="dimmed">{j.actor} · {when(j.created_at)}</Text></Group>
      ))}
    </Paper>
  );
}
