import { useState } from "react";
import { useNavigate, useSearchParams } from "react-router-dom";
import { Button, Center, Paper, PasswordInput, Stack, TextInput, Title } from "@mantine/core";
import { api, call } from "../api/client";
import { useAuth } from "../auth";
import { ErrorNote } from "../components/common";

/** POST /auth/session: the server sets the http-only session cookie and the CSRF cookie (local or LDAP users). */
export function LoginPage() {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const { refresh } = useAuth();
  const navigate = useNavigate();
  const [params] = useSearchParams();
  return (
    <Center h="100vh" component="main">
      <Paper withBorder p="xl" w={360}>
        <form onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          try {
            await call(api.POST("/api/v1/auth/session", { body: { username, password } }));
            await refresh();
            const next = params.get("next");
            navigate(next && next.startsWith("/") && !next.startsWith("//") ? next : "/", { replace: true });
          } catch (err) { setError(err); } finally { setBusy(false); }
        }}>
          <Stack>
            <Title order={1} size="h3">Armillary</Title>
            <TextInput label="Username" autoComplete="username" required value={username}
              onChange={(e) => setUsername(e.currentTarget.value)} autoFocus />
            <PasswordInput label="Password" autoComplete="current-password" required value={password}
              onChange={(e) => setPassword(e.currentTarget.value)} />
            <ErrorNote error={error} />
            <Button type="submit" loading={busy}>Log in</Button>
          </Stack>
        </form>
      </Paper>
    </Center>
  );
}
