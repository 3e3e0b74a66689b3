// The systems table: server-side keyset paging and filters (all in the URL, so a view can be shared),
// a column chooser, selection of rows or of everything the filter matches, and bulk actions.
import { memo, useCallback, useMemo, useState } from "react";
import { Link, useNavigate, useSearchParams } from "react-router-dom";
import {
  Anchor, Button, Checkbox, Group, Menu, Select, Table, Text, TextInput, UnstyledButton, Stack, Alert,
} from "@mantine/core";
import { api, call, cursorOf, type S } from "../api/client";
import { useAuth } from "../auth";
import { Confirm, ErrorNote, PageTitle, parsePairs } from "../components/common";
import { useRefs } from "../components/refs";
import { ACTIONS, STATES, canWriteSomewhere, useLoad } from "../lib";

const SIZES = ["50", "100", "500", "1000"];
const COLUMNS = ["hostname", "state", "environment", "hypervisor", "type", "labels", "os", "cpu", "memory", "owner"] as const;
type Col = (typeof COLUMNS)[number];
const DEFAULT_COLS: Col[] = ["hostname", "state", "environment", "hypervisor", "type", "labels", "owner"];

function cell(s: S["SystemOut"], c: Col) {
  switch (c) {
    case "hostname": return <Link className="row-link" to={`/systems/${s.id}`}>{s.hostname}</Link>;
    case "state": return <span className="state" data-state={s.state}>{s.state}</span>;
    case "environment": return s.environment.name;
    case "hypervisor": return s.hypervisor?.name ?? "—";
    case "type": return s.type?.name ?? "—";
    case "labels": return Object.entries(s.labels).map(([k, v]) => `${k}=${v}`).join(", ");
    case "os": return s.machine.os ?? "—";
    case "cpu": return s.machine.cpu ?? "—";
    case "memory": return s.machine.memory ? `${s.machine.memory} MiB` : "—";
    case "owner": return s.owner ?? "—";
  }
}

function sortKey(s: S["SystemOut"], c: Col): string | number {
  const v = cell(s, c);
  if (c === "hostname") return s.hostname;
  if (c === "state") return s.state;
  return typeof v === "number" || typeof v === "string" ? v : "";
}

export default function Systems() {
  const [params, setParams] = useSearchParams();
  const { me } = useAuth();
  const navigate = useNavigate();
  const refs = useRefs();
  const filter = {
    environment: params.get("environment") || undefined,
    hypervisor: params.get("hypervisor") || undefined,
    type: params.get("type") || undefined,
    state: params.get("state") || undefined,
    q: params.get("q") || undefined,
    label: params.getAll("label"),
  };
  const cursor = params.get("cursor") || undefined;
  const size = SIZES.includes(params.get("size") ?? "") ? Number(params.get("size")) : 50;
  const [back, setBack] = useState<(string | undefined)[]>([]);
  const [cols, setCols] = useState<Col[]>(() => JSON.parse(localStorage.getItem("systems.cols") ?? "null") ?? DEFAULT_COLS);
  const [sort, setSort] = useState<{ col: Col; desc: boolean } | null>(null);
  const [selected, setSelected] = useState<Set<number>>(new Set());
  const [allMatching, setAllMatching] = useState(false);
  const [bulk, setBulk] = useState<{ action: string; count: number | string } | null>(null);
  const [bulkError, setBulkError] = useState<unknown>();
  const key = params.toString();
  // The page remembers which URL it was loaded for: until the new one is in, the table says it is busy.
  const page = useLoad(
    async () => ({ key, ...(await call(api.GET("/api/v1/systems", { params: { query: { ...filter, limit: size, cursor } } }))) }),
    [key],
  );
  const busy = page.loading || page.data?.key !== key;
  const rows = useMemo(() => {
    const items = [...(page.data?.items ?? [])];
    if (sort) items.sort((a, b) => {
      const x = sortKey(a, sort.col), y = sortKey(b, sort.col);
      return (x < y ? -1 : x > y ? 1 : 0) * (sort.desc ? -1 : 1);
    });
    return items;
  }, [page.data, sort]);

  function setFilter(name: string, value: string | string[] | null) {
    const next = new URLSearchParams(params);
    next.delete(name);
    next.delete("cursor");
    for (const v of Array.isArray(value) ? value : value ? [value] : []) next.append(name, v);
    setBack([]);
    setSelected(new Set());
    setAllMatching(false);
    setParams(next);
  }
  function goto(c: string | undefined, forward: boolean) {
    const next = new URLSearchParams(params);
    if (c) next.set("cursor", c); else next.delete("cursor");
    setBack(forward ? [...back, cursor] : back.slice(0, -1));
    setParams(next);
  }
  // The bulk API selects by labels, environment, type and state; a hypervisor or hostname filter can only
  // be acted on row by row.
  const selectorable = !filter.hypervisor && !filter.q;
  const selector = (): S["Selector"] => allMatching
    ? { labels: Object.fromEntries(filter.label.map((l) => l.split("=", 2) as [string, string])),
        environment: filter.environment ?? null, type: filter.type ?? null, state: filter.state ?? null }
    : { systems: [...selected] };

  async function countMatching(): Promise<number | string> {
    // No count endpoint yet: walk the keyset pages (1000 at a time) up to 10,000.
    let n = 0;
    let c: string | undefined;
    for (let i = 0; i < 10; i++) {
      const p = await call(api.GET("/api/v1/systems", { params: { query: { ...filter, limit: 1000, cursor: c } } }));
      n += p.items.length;
      c = cursorOf(p.next);
      if (!c) return n;
    }
    return `more than ${n.toLocaleString()}`;
  }
  const writable = canWriteSomewhere(me);
  const toggle = useCallback((id: number, on: boolean) => {
    setAllMatching(false);
    setSelected((old) => { const n = new Set(old); if (on) n.add(id); else n.delete(id); return n; });
  }, []);
  const allOnPage = rows.length > 0 && rows.every((r) => selected.has(r.id));
  const labelText = filter.label.join(", ");
  const opt = (xs: { name: string }[] | undefined) => (xs ?? []).map((x) => ({ value: x.name, label: x.name }));

  return (
    <>
      <PageTitle actions={writable && <Button component={Link} to="/systems/new">New system</Button>}>Systems</PageTitle>
      <Group align="flex-end" mb="sm" wrap="wrap" role="search" aria-label="Filter systems">
        <Select label="Environment" clearable searchable data={opt(refs.data?.envs)} value={filter.environment ?? null}
          onChange={(v) => setFilter("environment", v)} w={150} />
        <Select label="Hypervisor" clearable searchable data={opt(refs.data?.hypervisors)} value={filter.hypervisor ?? null}
          onChange={(v) => setFilter("hypervisor", v)} w={150} />
        <Select label="Type" clearable searchable data={opt(refs.data?.types)} value={filter.type ?? null}
          onChange={(v) => setFilter("type", v)} w={140} />
        <Select label="State" clearable data={[...STATES]} value={filter.state ?? null}
          onChange={(v) => setFilter("state", v)} w={140} />
        <TextInput label="Labels" placeholder="tier=web, cell=a" defaultValue={labelText} key={`l-${labelText}`} w={180}
          onKeyDown={(e) => { if (e.key === "Enter") setFilter("label", Object.entries(parsePairs(e.currentTarget.value)).map(([k, v]) => `${k}=${v}`)); }}
          onBlur={(e) => { const v = Object.entries(parsePairs(e.currentTarget.value)).map(([k, x]) => `${k}=${x}`); if (v.join(", ") !== labelText) setFilter("label", v); }} />
        <TextInput label="Hostname starts with" defaultValue={filter.q ?? ""} key={`q-${filter.q ?? ""}`} w={180}
          onKeyDown={(e) => { if (e.key === "Enter") setFilter("q", e.currentTarget.value.trim() || null); }}
          onBlur={(e) => { if ((e.currentTarget.value.trim() || undefined) !== filter.q) setFilter("q", e.currentTarget.value.trim() || null); }} />
        <Menu closeOnItemClick={false}>
          <Menu.Target><Button variant="default">Columns</Button></Menu.Target>
          <Menu.Dropdown>
            {COLUMNS.map((c) => (
              <Menu.Item key={c}>
                <Checkbox label={c} checked={cols.includes(c)} onChange={(e) => {
                  const next = e.currentTarget.checked ? COLUMNS.filter((x) => x === c || cols.includes(x)) : cols.filter((x) => x !== c);
                  setCols(next);
                  localStorage.setItem("systems.cols", JSON.stringify(next));
                }} />
              </Menu.Item>
            ))}
          </Menu.Dropdown>
        </Menu>
      </Group>

      {writable && (selected.size > 0 || allMatching) && (
        <Alert mb="sm" color="indigo" data-testid="selection">
          <Group justify="space-between">
            <Text size="sm">{allMatching ? "Every system matching the filter is selected." : `${selected.size} selected on this page.`}
              {!allMatching && allOnPage && page.data?.next && selectorable && (
                <Anchor component="button" ml="xs" onClick={() => setAllMatching(true)}>Select all matching the filter</Anchor>
              )}
              {!allMatching && allOnPage && page.data?.next && !selectorable && " (selection by filter does not support hypervisor or hostname filters)"}
            </Text>
            <Menu>
              <Menu.Target><Button size="xs">Bulk action…</Button></Menu.Target>
              <Menu.Dropdown>
                {ACTIONS.filter((a) => a !== "clone").map((a) => (
                  <Menu.Item key={a} onClick={async () => {
                    setBulkError(undefined);
                    try { setBulk({ action: a, count: allMatching ? await countMatching() : selected.size }); }
                    catch (e) { setBulkError(e); }
                  }}>{a}</Menu.Item>
                ))}
              </Menu.Dropdown>
            </Menu>
          </Group>
        </Alert>
      )}
      <ErrorNote error={bulkError} />
      <Confirm opened={!!bulk} title={`${bulk?.action} systems`} confirmLabel={`${bulk?.action} ${bulk?.count} systems`}
        danger={bulk?.action === "destroy"} onCancel={() => setBulk(null)}
        onConfirm={async () => {
          const job = await call(api.POST("/api/v1/jobs", { body: { action: bulk!.action as S["JobSpec"]["action"], selector: selector() } }));
          setBulk(null);
          navigate(`/jobs/${job.id}`);
        }}>
        <Text>This will <b>{bulk?.action}</b> <b data-testid="bulk-count">{bulk?.count}</b> systems
          {allMatching ? " (everything matching the filter)" : ""}, as one bulk job you can follow.</Text>
      </Confirm>

      <ErrorNote error={page.error} />
      <Table.ScrollContainer minWidth={700}>
        <Table striped highlightOnHover aria-busy={busy} data-testid="systems-table">
          <Table.Thead>
            <Table.Tr>
              {writable && <Table.Th w={40}><Checkbox aria-label="Select all on this page" checked={allOnPage}
                onChange={(e) => { setAllMatching(false); setSelected(e.currentTarget.checked ? new Set(rows.map((r) => r.id)) : new Set()); }} /></Table.Th>}
              {cols.map((c) => (
                <Table.Th key={c} aria-sort={sort?.col === c ? (sort.desc ? "descending" : "ascending") : undefined}>
                  <UnstyledButton onClick={() => setSort(sort?.col === c && !sort.desc ? { col: c, desc: true } : { col: c, desc: false })}
                    title="Sort this page">{c}{sort?.col === c ? (sort.desc ? " ▼" : " ▲") : ""}</UnstyledButton>
                </Table.Th>
              ))}
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {rows.map((s) => (
              <SystemRow key={s.id} s={s} cols={cols} selectable={writable} checked={allMatching || selected.has(s.id)} onToggle={toggle} />
            ))}
          </Table.Tbody>
        </Table>
      </Table.ScrollContainer>
      <Stack gap={4} mt="sm">
        {!busy && rows.length === 0 && <Text c="dimmed">No systems match.</Text>}
        <Group>
          <Button variant="default" disabled={busy || back.length === 0} onClick={() => goto(back[back.length - 1], false)}>Previous</Button>
          <Text size="sm" data-testid="page-number">Page {back.length + 1}</Text>
          <Button variant="default" disabled={busy || !page.data?.next} onClick={() => goto(cursorOf(page.data?.next), true)}>Next</Button>
          <Select aria-label="Rows per page" data={SIZES} value={String(size)} w={90} onChange={(v) => setFilter("size", v)} />
          <Text size="sm" c="dimmed">rows per page</Text>
        </Group>
      </Stack>
    </>
  );
}

/** One row in plain elements (a page may hold 1000): native checkbox, a link, text. */
const SystemRow = memo(function SystemRow({ s, cols, selectable, checked, onToggle }: {
  s: S["SystemOut"]; cols: Col[]; selectable: boolean; checked: boolean; onToggle: (id: number, on: boolean) => void;
}) {
  return (
    <tr data-testid="system-row" className="system-row">
      {selectable && <td><input type="checkbox" aria-label={`Select ${s.hostname}`} checked={checked}
        onChange={(e) => onToggle(s.id, e.currentTarget.checked)} /></td>}
      {cols.map((c) => <td key={c}>{cell(s, c)}</td>)}
    </tr>
  );
});
