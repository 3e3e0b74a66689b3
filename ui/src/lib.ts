// Small shared helpers: loading state, the lifecycle rules the action buttons follow, permissions.
import { useCallback, useEffect, useRef, useState } from "react";
import type { S } from "./api/client";

export function useLoad<T>(load: () => Promise<T>, deps: unknown[]) {
  const [data, setData] = useState<T | undefined>();
  const [error, setError] = useState<unknown>();
  const [loading, setLoading] = useState(true);
  const seq = useRef(0);
  const reload = useCallback(() => {
    const mine = ++seq.current;
    setLoading(true);
    load().then(
      (d) => { if (mine === seq.current) { setData(d); setError(undefined); setLoading(false); } },
      (e) => { if (mine === seq.current) { setError(e); setLoading(false); } },
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  useEffect(reload, [reload]);
  return { data, error, loading, reload, setData };
}

export const STATES = ["defined", "creating", "created", "provisioning", "ready", "deploying", "stopped",
  "destroying", "destroyed", "error"] as const;

// Mirrors armillary.domain.states.ALLOWED_FROM (the API does not publish it yet): which state each action
// may start from. The server checks again; a refused action comes back as a 409 shown in words.
export const ALLOWED_FROM: Record<string, string[]> = {
  create: ["defined", "destroyed", "error"],
  stage: ["defined", "destroyed", "error"],
  provision: ["created", "ready", "error"],
  deploy: ["ready"],
  rollback: ["ready", "error"],
  stop: ["created", "ready"],
  start: ["stopped"],
  reload: ["created", "ready", "stopped", "error"],
  destroy: ["created", "ready", "stopped", "error"],
  clone: ["defined", "created", "ready", "stopped"],
};
export const ACTIONS = Object.keys(ALLOWED_FROM) as S["ActionRequest"]["action"][];

export function whyNot(action: string, state: string): string | undefined {
  if (ALLOWED_FROM[action]?.includes(state)) return undefined;
  return `cannot ${action} a system that is ${state}: it needs ${ALLOWED_FROM[action].join(" or ")}`;
}

/** May this user run actions on this system? (viewer: no; user: own systems; operator/admin: all). */
export function canAct(me: S["UserOut"] | null | undefined, system: S["SystemOut"]): boolean {
  if (!me) return false;
  if (me.admin) return true;
  const role = me.roles.find((r) => r.environment_id === system.environment.id)?.role;
  return role === "operator" || (role === "user" && system.owner === me.name);
}

export function roleIn(me: S["UserOut"] | null | undefined, envId: number): string | undefined {
  if (me?.admin) return "admin";
  return me?.roles.find((r) => r.environment_id === envId)?.role;
}

export function canWriteSomewhere(me: S["UserOut"] | null | undefined): boolean {
  return !!me && (me.admin || me.roles.some((r) => r.role === "operator" || r.role === "user"));
}

export function when(iso: string | null | undefined): string {
  return iso ? new Date(iso).toLocaleString() : "—";
}

export const STATUS_COLOR: Record<string, string> = {
  succeeded: "green", ready: "green", failed: "red", error: "red", running: "blue", pending: "gray",
  cancelled: "orange", destroyed: "gray", defined: "gray", creating: "blue", provisioning: "blue",
  deploying: "blue", destroying: "orange", stopped: "yellow", created: "teal",
};
