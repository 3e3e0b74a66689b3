import { useState } from "react";
import { Button, Select, Switch, Table, TextInput } from "@mantine/core";
import { api, call, fieldError, type S } from "../api/client";
import { ErrorNote, PageTitle, parsePairs } from "../components/common";
import { CreatePanel } from "../components/Form";
import { ScheduleEdit } from "../components/Editors";
import { ACTIONS, useLoad, when } from "../lib";

export default function Schedules() {
  const list = useLoad(() => call(api.GET("/api/v1/schedules", { params: { query: { limit: 1000 } } })), []);
  const [name, setName] = useState("");
  const [cron, setCron] = useState("0 3 * * *");
  const [timezone, setTimezone] = useState("UTC");
  const [action, setAction] = useState<string>("provision");
  const [labels, setLabels] = useState("");
  const [environment, setEnvironment] = useState("");
  const [enabled, setEnabled] = useState(true);
  const [editing, setEditing] = useState<S["ScheduleOut"] | null>(null);
  return (
    <>
      <PageTitle>Schedules</PageTitle>
      <CreatePanel title="New schedule" onSubmit={async () => {
        await call(api.POST("/api/v1/schedules", { body: { name, cron, timezone, enabled, job: {
          action: action as S["JobSpec"]["action"], selector: { labels: parsePairs(labels), environment: environment || null } } } }));
        setName(""); list.reload();
      }}>{(err) => (<>
        <TextInput label="Name" required value={name} onChange={(e) => setName(e.currentTarget.value)} error={fieldError(err, "name")} />
        <TextInput label="Cron (minute hour day month weekday)" required value={cron} onChange={(e) => setCron(e.currentTarget.value)} error={fieldError(err, "cron")}
          description="The next fire time is shown in the list once saved." />
        <TextInput label="Time zone" value={timezone} onChange={(e) => setTimezone(e.currentTarget.value)} error={fieldError(err, "timezone")} />
        <Select label="Action" data={ACTIONS} value={action} onChange={(v) => setAction(v ?? "provision")} error={fieldError(err, "job.action")} />
        <TextInput label="Systems with labels" placeholder="tier=web" value={labels} onChange={(e) => setLabels(e.currentTarget.value)} error={fieldError(err, "job.selector")} />
        <TextInput label="In environment" value={environment} onChange={(e) => setEnvironment(e.currentTarget.value)} error={fieldError(err, "job.selector.environment")} />
        <Switch label="Enabled" checked={enabled} onChange={(e) => setEnabled(e.currentTarget.checked)} />
      </>)}</CreatePanel>
      <ErrorNote error={list.error} />
      <Table striped><Table.Thead><Table.Tr><Table.Th>Name</Table.Th><Table.Th>Cron</Table.Th><Table.Th>Job</Table.Th><Table.Th>Next run</Table.Th><Table.Th>Last run</Table.Th><Table.Th /></Table.Tr></Table.Thead>
        <Table.Tbody>{(list.data?.items ?? []).map((s) => (
          <Table.Tr key={s.id}><Table.Td>{s.name}{s.enabled ? "" : " (disabled)"}</Table.Td><Table.Td>{s.cron} {s.timezone}</Table.Td>
            <Table.Td>{String(s.job.action)}</Table.Td><Table.Td>{when(s.next_run_at)}</Table.Td><Table.Td>{when(s.last_run_at)}</Table.Td>
            <Table.Td><Button size="xs" variant="default" onClick={() => setEditing(s)}>Edit {s.name}</Button></Table.Td></Table.Tr>
        ))}</Table.Tbody></Table>
      <ScheduleEdit item={editing} onClose={() => setEditing(null)} onSaved={() => { setEditing(null); list.reload(); }} />
    </>
  );
}
