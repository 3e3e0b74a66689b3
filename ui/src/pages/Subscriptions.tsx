// Notification subscriptions: which events go where (a signed webhook, e-mail, a chat room), and the log of
// every delivery — status, tries, the receiver's status codes, latency, the last error. The webhook secret is
// shown once, right after the create (or a rotation); the API never returns it again.
import { useState } from "react";
import { Alert, Button, Code, Group, MultiSelect, Select, Table, Text, TextInput } from "@mantine/core";
import { api, call, fieldError, type S } from "../api/client";
import { useAuth } from "../auth";
import { ErrorNote, PageTitle, StateBadge, parsePairs } from "../components/common";
import { CreatePanel } from "../components/Form";
import { canWriteSomewhere, useLoad, when } from "../lib";

const EVENTS = ["job.finished", "job.failed", "cluster.scaled", "audit.kicked_out", "environment.locked",
  "environment.unlocked", "quota.nearly_spent"];
type Sub = S["SubscriptionOut"];

function target(s: Sub): string {
  const t = s.target as Record<string, unknown>;
  if (typeof t.url === "string") return `webhook ${t.url} (${String(t.format ?? "armillary")})`;
  if (Array.isArray(t.to)) return `e-mail ${t.to.join(", ")}`;
  return `chat ${String(t.connection)} ${String(t.room)}`;
}

function Deliveries({ sub }: { sub: Sub }) {
  const log = useLoad(() => call(api.GET("/api/v1/subscriptions/{ref}/deliveries",
    { params: { path: { ref: String(sub.id) }, query: { limit: 50 } } })), [sub.id]);
  return (
    <section aria-label={`Deliveries of ${sub.name}`}>
      <Group justify="space-between" mt="lg" mb="xs">
        <Text fw={600}>Deliveries of {sub.name}</Text>
        <Button size="xs" variant="default" onClick={log.reload}>Refresh</Button>
      </Group>
      <ErrorNote error={log.error} />
      <Table striped data-testid="deliveries">
        <Table.Thead><Table.Tr><Table.Th>Event</Table.Th><Table.Th>Status</Table.Th><Table.Th>Tries</Table.Th>
          <Table.Th>Codes</Table.Th><Table.Th>Latency</Table.Th><Table.Th>Last error</Table.Th><Table.Th>At</Table.Th></Table.Tr></Table.Thead>
        <Table.Tbody>{(log.data?.items ?? []).map((d) => (
          <Table.Tr key={d.id} data-testid={`delivery-${d.id}`}>
            <Table.Td><Text size="sm">{d.event}</Text><Text size="xs" c="dimmed">{d.text}</Text></Table.Td>
            <Table.Td><StateBadge value={d.status} /></Table.Td>
            <Table.Td>{d.attempts}</Table.Td>
            <Table.Td>{(d.log ?? []).map((a) => a.status_code ?? "—").join(" → ")}</Table.Td>
            <Table.Td>{d.latency_ms == null ? "—" : `${d.latency_ms} ms`}</Table.Td>
            <Table.Td><Text size="xs">{d.last_error ?? ""}</Text></Table.Td>
            <Table.Td>{when(d.created_at)}</Table.Td>
          </Table.Tr>
        ))}</Table.Tbody>
      </Table>
      {log.data && log.data.items.length === 0 && <Text c="dimmed" size="sm" my="sm">Nothing delivered yet.</Text>}
    </section>
  );
}

export default function Subscriptions() {
  const { me } = useAuth();
  const list = useLoad(() => call(api.GET("/api/v1/subscriptions", { params: { query: { limit: 1000 } } })), []);
  const [name, setName] = useState("");
  const [environment, setEnvironment] = useState("");
  const [events, setEvents] = useState<string[]>([]);
  const [labels, setLabels] = useState("");
  const [kind, setKind] = useState<"webhook" | "email">("webhook");
  const [url, setUrl] = useState("");
  const [format, setFormat] = useState("armillary");
  const [to, setTo] = useState("");
  const [secret, setSecret] = useState<{ name: string; secret: string } | null>(null);
  const [selected, setSelected] = useState<Sub | null>(null);
  const [actionError, setActionError] = useState<unknown>();
  const writer = canWriteSomewhere(me);

  async function test(s: Sub) {
    setActionError(undefined);
    try {
      await call(api.POST("/api/v1/subscriptions/{ref}/test", { params: { path: { ref: String(s.id) } } }));
      setSelected(null); setTimeout(() => setSelected(s), 0);
    } catch (e) { setActionError(e); }
  }
  async function rotate(s: Sub) {
    setActionError(undefined);
    try {
      const out = await call(api.POST("/api/v1/subscriptions/{ref}/rotate", { params: { path: { ref: String(s.id) } } }));
      setSecret({ name: s.name, secret: out.secret ?? "" });
    } catch (e) { setActionError(e); }
  }

  return (
    <>
      <PageTitle>Subscriptions</PageTitle>
      {writer && <CreatePanel title="New subscription" onSubmit={async () => {
        const made = await call(api.POST("/api/v1/subscriptions", { body: {
          name, environment: environment || null, events: events as S["SubscriptionCreate"]["events"],
          labels: parsePairs(labels),
          target: kind === "webhook" ? { kind, url, format: format as "armillary" | "slack" | "mattermost" }
            : { kind, to: to.split(/[,\s]+/).filter(Boolean) } } }));
        if (made.secret) setSecret({ name: made.name, secret: made.secret });
        setName(""); list.reload();
      }}>{(err) => (<>
        <TextInput label="Name" required value={name} onChange={(e) => setName(e.currentTarget.value)} error={fieldError(err, "name")} />
        <TextInput label="Environment" description="Empty: every environment (admins only)" value={environment}
          onChange={(e) => setEnvironment(e.currentTarget.value)} error={fieldError(err, "environment")} />
        <MultiSelect label="Events" description="None: every kind" data={EVENTS} value={events} onChange={setEvents} error={fieldError(err, "events")} />
        <TextInput label="Systems with labels" placeholder="service=web" value={labels} onChange={(e) => setLabels(e.currentTarget.value)} error={fieldError(err, "labels")} />
        <Select label="Send to" data={[{ value: "webhook", label: "Webhook" }, { value: "email", label: "E-mail" }]} value={kind}
          onChange={(v) => setKind((v as "webhook" | "email") ?? "webhook")} allowDeselect={false} />
        {kind === "webhook" ? (<>
          <TextInput label="URL" required value={url} onChange={(e) => setUrl(e.currentTarget.value)} error={fieldError(err, "target.url") ?? fieldError(err, "target")} />
          <Select label="Format" data={["armillary", "slack", "mattermost"]} value={format} onChange={(v) => setFormat(v ?? "armillary")} allowDeselect={false} />
        </>) : (
          <TextInput label="Addresses" required placeholder="ops@example.com" value={to} onChange={(e) => setTo(e.currentTarget.value)} error={fieldError(err, "target.to") ?? fieldError(err, "target")} />
        )}
      </>)}</CreatePanel>}
      {secret && <Alert color="blue" title={`Signing secret of ${secret.name}`} mb="md" withCloseButton closeButtonLabel="Dismiss the secret" onClose={() => setSecret(null)} data-testid="secret">
        <Text size="sm">Keep it now: it is not shown again. Receivers check <Code>X-Armillary-Signature</Code> (HMAC-SHA256 of the body) with it.</Text>
        <Code block>{secret.secret}</Code>
      </Alert>}
      <ErrorNote error={list.error ?? actionError} />
      <Table striped>
        <Table.Thead><Table.Tr><Table.Th>Name</Table.Th><Table.Th>Environment</Table.Th><Table.Th>Events</Table.Th>
          <Table.Th>Target</Table.Th><Table.Th>Enabled</Table.Th><Table.Th>Actions</Table.Th></Table.Tr></Table.Thead>
        <Table.Tbody>{(list.data?.items ?? []).map((s) => (
          <Table.Tr key={s.id} data-testid={`subscription-${s.name}`}>
            <Table.Td>{s.name}</Table.Td>
            <Table.Td>{s.environment?.name ?? "all"}</Table.Td>
            <Table.Td>{s.events.length ? s.events.join(", ") : "all"}</Table.Td>
            <Table.Td><Text size="sm">{target(s)}</Text></Table.Td>
            <Table.Td>{s.enabled ? "yes" : "no"}</Table.Td>
            <Table.Td><Group gap={4} wrap="nowrap">
              <Button size="compact-xs" variant="default" onClick={() => setSelected(s)} aria-label={`Deliveries of ${s.name}`}>Deliveries</Button>
              {writer && <Button size="compact-xs" variant="default" onClick={() => void test(s)} aria-label={`Test ${s.name}`}>Test</Button>}
              {writer && s.has_secret && <Button size="compact-xs" variant="default" onClick={() => void rotate(s)} aria-label={`Rotate the secret of ${s.name}`}>Rotate secret</Button>}
            </Group></Table.Td>
          </Table.Tr>
        ))}</Table.Tbody>
      </Table>
      {list.data && list.data.items.length === 0 && <Text c="dimmed" size="sm" my="sm">No subscriptions yet.</Text>}
      {selected && <Deliveries key={selected.id} sub={selected} />}
    </>
  );
}
