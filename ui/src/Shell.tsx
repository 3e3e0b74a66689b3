// The frame of every page: navigation (a skip link first, for keyboards), the user, light/dark.
import type { ReactNode } from "react";
import { NavLink as RouterLink, useLocation } from "react-router-dom";
import { ActionIcon, AppShell, Burger, Button, Group, NavLink, Text, Title, useMantineColorScheme } from "@mantine/core";
import { useDisclosure } from "@mantine/hooks";
import { useAuth } from "./auth";

const NAV: { to: string; label: string; admin?: boolean }[] = [
  { to: "/", label: "Dashboard" },
  { to: "/systems", label: "Systems" },
  { to: "/jobs", label: "Jobs" },
  { to: "/environments", label: "Environments" },
  { to: "/hypervisors", label: "Hypervisors" },
  { to: "/types", label: "Types" },
  { to: "/groups", label: "Groups" },
  { to: "/schedules", label: "Schedules", admin: true },
  { to: "/network", label: "IP pools & DNS" },
  { to: "/clusters", label: "Clusters" },
  { to: "/stacks", label: "Stacks" },
  { to: "/audits", label: "Audits" },
  { to: "/attention", label: "Attention queue" },
  { to: "/subscriptions", label: "Subscriptions" },
  { to: "/admin/users", label: "Users & grants", admin: true },
  { to: "/admin/tokens", label: "Tokens" },
  { to: "/admin/audit", label: "Audit trail", admin: true },
];

export function Shell({ children }: { children: ReactNode }) {
  const { me, logout } = useAuth();
  const [opened, { toggle, close }] = useDisclosure();
  const { colorScheme, setColorScheme } = useMantineColorScheme();
  const location = useLocation();
  const dark = colorScheme === "dark";
  return (
    <AppShell header={{ height: 52 }} navbar={{ width: 210, breakpoint: "sm", collapsed: { mobile: !opened } }} padding="md">
      <a href="#main" className="skip-link">Skip to content</a>
      <AppShell.Header>
        <Group h="100%" px="md" justify="space-between">
          <Group>
            <Burger opened={opened} onClick={toggle} hiddenFrom="sm" size="sm" aria-label="Toggle navigation" />
            <Title order={1} size="h4">Armillary</Title>
          </Group>
          <Group gap="xs">
            <Text size="sm" data-testid="whoami">{me?.name}{me?.admin ? " (admin)" : ""}</Text>
            <ActionIcon variant="default" onClick={() => setColorScheme(dark ? "light" : "dark")}
              aria-label={dark ? "Switch to light theme" : "Switch to dark theme"}>{dark ? "☀" : "☾"}</ActionIcon>
            <Button variant="default" size="xs" onClick={() => void logout()}>Log out</Button>
          </Group>
        </Group>
      </AppShell.Header>
      <AppShell.Navbar p="xs" component="nav" aria-label="Main">
        {NAV.filter((n) => !n.admin || me?.admin).map((n) => (
          <NavLink key={n.to} component={RouterLink} to={n.to} label={n.label} onClick={close} variant="filled"
            active={n.to === "/" ? location.pathname === "/" : location.pathname.startsWith(n.to)} />
        ))}
      </AppShell.Navbar>
      <AppShell.Main id="main" component="main">{children}</AppShell.Main>
    </AppShell>
  );
}
