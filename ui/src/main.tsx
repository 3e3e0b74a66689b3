import "@mantine/core/styles.css";
import "./index.css";
import { StrictMode, Suspense, lazy } from "react";
import { createRoot } from "react-dom/client";
import { BrowserRouter, Navigate, Route, Routes, useLocation } from "react-router-dom";
import { Center, Loader, MantineProvider, createTheme } from "@mantine/core";
import { AuthProvider, useAuth } from "./auth";
import { Shell } from "./Shell";
import { LoginPage } from "./pages/Login";

// Each page is its own chunk: the first load carries the shell and the page asked for, nothing more.
const Dashboard = lazy(() => import("./pages/Dashboard"));
const Systems = lazy(() => import("./pages/Systems"));
const SystemPage = lazy(() => import("./pages/SystemPage"));
const SystemCreate = lazy(() => import("./pages/SystemCreate"));
const Jobs = lazy(() => import("./pages/Jobs"));
const JobPage = lazy(() => import("./pages/JobPage"));
const Environments = lazy(() => import("./pages/Environments"));
const Hypervisors = lazy(() => import("./pages/Hypervisors"));
const Types = lazy(() => import("./pages/Types"));
const Groups = lazy(() => import("./pages/Groups"));
const Schedules = lazy(() => import("./pages/Schedules"));
const Users = lazy(() => import("./pages/Users"));
const Tokens = lazy(() => import("./pages/Tokens"));
const Audit = lazy(() => import("./pages/Audit"));
const Network = lazy(() => import("./pages/Network"));
const Clusters = lazy(() => import("./pages/Clusters"));
const ClusterPage = lazy(() => import("./pages/ClusterPage"));
const Stacks = lazy(() => import("./pages/Stacks"));
const StackPage = lazy(() => import("./pages/StackPage"));
const Audits = lazy(() => import("./pages/Audits"));
const Attention = lazy(() => import("./pages/Attention"));
const Subscriptions = lazy(() => import("./pages/Subscriptions"));

// Shade 8 and auto-contrast: white text on the primary colour meets WCAG AA (axe checks it in the tests).
const theme = createTheme({ primaryColor: "indigo", primaryShade: { light: 8, dark: 8 }, autoContrast: true, defaultRadius: "sm" });

function Guarded() {
  const { me } = useAuth();
  const location = useLocation();
  if (me === undefined) return <Center h="100vh"><Loader aria-label="Loading" /></Center>;
  if (me === null) return <Navigate to={`/login?next=${encodeURIComponent(location.pathname + location.search)}`} replace />;
  return (
    <Shell>
      <Suspense fallback={<Center p="xl"><Loader aria-label="Loading page" /></Center>}>
        <Routes>
          <Route path="/" element={<Dashboard />} />
          <Route path="/systems" element={<Systems />} />
          <Route path="/systems/new" element={<SystemCreate />} />
          <Route path="/systems/:id" element={<SystemPage />} />
          <Route path="/jobs" element={<Jobs />} />
          <Route path="/jobs/:id" element={<JobPage />} />
          <Route path="/environments" element={<Environments />} />
          <Route path="/hypervisors" element={<Hypervisors />} />
          <Route path="/types" element={<Types />} />
          <Route path="/groups" element={<Groups />} />
          <Route path="/schedules" element={<Schedules />} />
          <Route path="/admin/users" element={<Users />} />
          <Route path="/admin/tokens" element={<Tokens />} />
          <Route path="/admin/audit" element={<Audit />} />
          <Route path="/network" element={<Network />} />
          <Route path="/clusters" element={<Clusters />} />
          <Route path="/clusters/:name" element={<ClusterPage />} />
          <Route path="/stacks" element={<Stacks />} />
          <Route path="/stacks/new" element={<StackPage />} />
          <Route path="/stacks/:name" element={<StackPage />} />
          <Route path="/audits" element={<Audits />} />
          <Route path="/attention" element={<Attention />} />
          <Route path="/subscriptions" element={<Subscriptions />} />
          <Route path="*" element={<Navigate to="/" replace />} />
        </Routes>
      </Suspense>
    </Shell>
  );
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <MantineProvider theme={theme} defaultColorScheme="auto">
      <AuthProvider>
        <BrowserRouter>
          <Routes>
            <Route path="/login" element={<LoginPage />} />
            <Route path="/*" element={<Guarded />} />
          </Routes>
        </BrowserRouter>
      </AuthProvider>
    </MantineProvider>
  </StrictMode>,
);
