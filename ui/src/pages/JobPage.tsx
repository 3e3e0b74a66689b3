// A job followed live: steps with status and attempts, the log over SSE (EventSource resumes after a dropped
// connection by sending Last-Event-ID), a virtualized list that follows the tail unless you scroll up,
// the per-host summary of a bulk job, cancel.
import { useEffect, useRef, useState } from "react";
import { Link, useParams } from "react-router-dom";
import { Anchor, Badge, Button, Group, Paper, Table, Text, Title } from "@mantine/core";
import { useVirtualizer } from "@tanstack/react-virtual";
import { api, call, type S } from "../api/client";
import { useAuth } from "../auth";
import { Confirm, ErrorNote, PageTitle, StateBadge } from "../components/common";
import { canWriteSomewhere, useLoad, when } from "../lib";

interface JobEvent { id: number; kind: string; message: string; step?: string | null; at?: string }
const TERMINAL = ["succeeded", "failed", "cancelled"];
const KINDS = ["log", "output", "step", "status", "info", "warn", "warning", "error", "summary", "job"];

export default function JobPage() {
  const { id = "" } = useParams();
  const jobId = Number(id);
  const { me } = useAuth();
  const job = useLoad(() => call(api.GET("/api/v1/jobs/{job_id}", { params: { path: { job_id: jobId } } })), [jobId]);
  const children = useLoad(async () => job.data && !job.data.system_id
    ? call(api.GET("/api/v1/jobs", { params: { query: { parent: jobId, limit: 1000 } } })) : undefined, [jobId, job.data?.status]);
  const [ended, setEnded] = useState<string | null>(null);
  const [cancelling, setCancelling] = useState(false);
  const log = useLog(jobId, (status) => { setEnded(status); job.reload(); });
  const status = ended ?? job.data?.status;

  // Steps and status change while it runs: re-read the job every 2 s until the stream says it ended.
  useEffect(() => {
    if (ended || (job.data && TERMINAL.includes(job.data.status))) return;
    const t = setInterval(job.reload, 2000);
    return () => clearInterval(t);
  }, [ended, job.data?.status, job.reload]);

  const j = job.data;
  const hosts = hostResults(j);
  return (
    <>
      <PageTitle actions={<Group>{status && <span data-testid="job-status"><StateBadge value={status} /></span>}
        {j && canWriteSomewhere(me) && !TERMINAL.includes(status ?? "") &&
          <Button size="xs" color="red" variant="outline" onClick={() => setCancelling(true)}>Cancel job</Button>}</Group>}>
        {`Job #${id}${j ? ` · ${j.action}` : ""}`}
      </PageTitle>
      <ErrorNote error={job.error} />
      <Confirm opened={cancelling} title="Cancel job" confirmLabel="Cancel job" danger onCancel={() => setCancelling(false)}
        onConfirm={async () => { await call(api.POST("/api/v1/jobs/{job_id}/cancel", { params: { path: { job_id: jobId } } })); setCancelling(false); job.reload(); }}>
        <Text>Ask job #{id} to stop? Steps already running finish first.</Text>
      </Confirm>
      {j && (
        <Text size="sm" mb="sm">
          {j.system_id && <>System <Anchor component={Link} to={`/systems/${j.system_id}`}>#{j.system_id}</Anchor> · </>}
          by {j.actor ?? "—"} · started {when(j.started_at)} · finished {when(j.finished_at)}
          {j.waiting_for_lock && " · waiting for the system's lock"}
          {j.error && <Text span c="red"> · {j.error}</Text>}
        </Text>
      )}
      {j && j.steps.length > 0 && (
        <Paper withBorder p="sm" mb="md">
          <Title order={3} size="h5" mb="xs">Steps</Title>
          <Table><Table.Thead><Table.Tr><Table.Th>Step</Table.Th><Table.Th>Status</Table.Th><Table.Th>Attempts</Table.Th><Table.Th>Error</Table.Th></Table.Tr></Table.Thead>
            <Table.Tbody>{j.steps.map((st: S["StepOut"]) => (
              <Table.Tr key={st.name}><Table.Td>{st.name}</Table.Td><Table.Td><StateBadge value={st.status} /></Table.Td>
                <Table.Td>{st.attempts}/{st.max_attempts}</Table.Td><Table.Td>{st.error ?? ""}</Table.Td></Table.Tr>
            ))}</Table.Tbody></Table>
        </Paper>
      )}
      {hosts.length > 0 && (
        <Paper withBorder p="sm" mb="md">
          <Title order={3} size="h5" mb="xs">Hosts ({hosts.filter((h) => h.status === "succeeded").length} ✔ · {hosts.filter((h) => h.status === "failed").length} ✗)</Title>
          <Group gap={6} data-testid="host-summary">{hosts.map((h) => (
            <Badge key={h.host} variant="outline" color={h.status === "succeeded" ? "green" : h.status === "failed" ? "red" : "gray"}
              styles={{ label: { color: "var(--mantine-color-text)" } }}
              {...(h.jobId ? { component: Link, to: `/jobs/${h.jobId}` } as object : {})}>
              {h.status === "succeeded" ? "✔" : h.status === "failed" ? "✗" : "…"} {h.host}
            </Badge>
          ))}</Group>
          {children.data && children.data.items.length > 0 && <Text size="xs" mt={4}>{children.data.items.length} child jobs</Text>}
        </Paper>
      )}
      <LogView lines={log.lines} connected={log.connected} />
    </>
  );
}

/** The job's events over SSE. The browser reconnects by itself and sends Last-Event-ID, so nothing is lost or doubled. */
function useLog(jobId: number, onEnd: (status: string) => void) {
  const [lines, setLines] = useState<JobEvent[]>([]);
  const [connected, setConnected] = useState(false);
  const endRef = useRef(onEnd);
  endRef.current = onEnd;
  useEffect(() => {
    setLines([]);
    const buffer: JobEvent[] = [];
    let lastId = 0;
    // Events arrive in bursts of hundreds: batch them into one state update every 100 ms (10 renders a
    // second, whatever the rate), appended to one array (no copy of 10,000 lines per update).
    let frame = 0;
    const all: JobEvent[] = [];
    const flush = () => { frame = 0; all.push(...buffer.splice(0)); setLines(all.slice(0)); };
    let source: EventSource | null = null;
    let retry = 0;
    let closed = false;
    const onEvent = (e: MessageEvent) => {
      const ev = JSON.parse(e.data) as JobEvent;
      if (ev.id <= lastId) return;
      lastId = ev.id;
      buffer.push(ev);
      if (!frame) frame = window.setTimeout(flush, 100);
    };
    // The browser retries a dropped stream by itself (sending Last-Event-ID); when it gives up (an error
    // status on a retry), connect again after the last event seen.
    const connect = () => {
      source = new EventSource(`/api/v1/jobs/${jobId}/events${lastId ? `?after=${lastId}` : ""}`, { withCredentials: true });
      source.onopen = () => setConnected(true);
      source.onerror = () => {
        setConnected(false);
        if (source?.readyState === EventSource.CLOSED && !closed) retry = window.setTimeout(connect, 2000);
      };
      source.onmessage = onEvent;
      for (const kind of KINDS) source.addEventListener(kind, onEvent as EventListener);
      source.addEventListener("end", (e) => {
        closed = true;
        source?.close();
        setConnected(false);
        if (frame) { clearTimeout(frame); flush(); }
        endRef.current((JSON.parse((e as MessageEvent).data) as { status: string }).status);
      });
    };
    connect();
    return () => { closed = true; source?.close(); clearTimeout(retry); clearTimeout(frame); };
  }, [jobId]);
  return { lines, connected };
}

export function LogView({ lines, connected }: { lines: JobEvent[]; connected: boolean }) {
  const parent = useRef<HTMLDivElement>(null);
  const [follow, setFollow] = useState(true);
  const lastTop = useRef(0);
  const v = useVirtualizer({ count: lines.length, getScrollElement: () => parent.current, estimateSize: () => 18, overscan: 30 });
  useEffect(() => { if (follow && lines.length) v.scrollToIndex(lines.length - 1, { align: "end" }); }, [lines.length, follow, v]);
  return (
    <Paper withBorder p="sm">
      <Group justify="space-between" mb="xs">
        <Title order={3} size="h5">Log <Text span size="xs" c="dimmed">({lines.length} lines{connected ? ", live" : ""})</Text></Title>
        {!follow && <Button size="xs" variant="light" onClick={() => setFollow(true)}>Follow the end</Button>}
      </Group>
      <div ref={parent} role="log" aria-live="polite" aria-label="Job log" tabIndex={0} data-testid="job-log"
        style={{ height: 420, overflow: "auto", contain: "strict" }}
        onScroll={(e) => {
          // Only the user scrolling up stops following (the log growing under us does not); reaching the end resumes.
          const el = e.currentTarget;
          const up = el.scrollTop < lastTop.current - 2;
          lastTop.current = el.scrollTop;
          if (el.scrollHeight - el.scrollTop - el.clientHeight < 30) { if (!follow) setFollow(true); } else if (up && follow) setFollow(false);
        }}>
        <div style={{ height: v.getTotalSize(), position: "relative" }}>
          {v.getVirtualItems().map((row) => {
            const ev = lines[row.index];
            return (
              <div key={row.key} className="log-line" data-kind={ev.kind}
                style={{ position: "absolute", top: 0, left: 0, right: 0, transform: `translateY(${row.start}px)`, color: ev.kind === "error" ? "var(--mantine-color-red-text)" : undefined }}>
                {ev.step ? `[${ev.step}] ` : ""}{ev.message}
              </div>
            );
          })}
        </div>
      </div>
    </Paper>
  );
}

/** Per-host results of a bulk job: its summary once it ended, else what its batches wrote in the context so far. */
function hostResults(j: S["JobOut"] | undefined): { host: string; status: string; jobId?: number }[] {
  if (!j) return [];
  const out = new Map<string, { host: string; status: string; jobId?: number }>();
  for (const [key, batch] of Object.entries(j.context ?? {})) {
    if (!key.startsWith("batch_") || typeof batch !== "object" || !batch) continue;
    for (const [host, r] of Object.entries(batch as Record<string, { status?: string; job_id?: number; job?: number }>)) {
      out.set(host, { host, status: r?.status ?? "?", jobId: r?.job_id ?? r?.job });
    }
  }
  const summary = (j.summary as { hosts?: Record<string, string> } | null)?.hosts ?? {};
  for (const [host, status] of Object.entries(summary)) out.set(host, { ...out.get(host), host, status });
  return [...out.values()].sort((a, b) => a.host.localeCompare(b.host));
}
