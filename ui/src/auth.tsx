// Who is logged in (GET /auth/me), shared by every page; a 401 anywhere sends the browser to the login page.
import { createContext, useCallback, useContext, useEffect, useState, type ReactNode } from "react";
import { api, call, type S } from "./api/client";

interface AuthState {
  me: S["UserOut"] | null | undefined; // undefined: still asking
  refresh: () => Promise<void>;
  logout: () => Promise<void>;
}

const AuthContext = createContext<AuthState>({ me: undefined, refresh: async () => {}, logout: async () => {} });

export function AuthProvider({ children }: { children: ReactNode }) {
  const [me, setMe] = useState<S["UserOut"] | null | undefined>(undefined);
  const refresh = useCallback(async () => {
    try {
      setMe(await call(api.GET("/api/v1/auth/me")));
    } catch {
      setMe(null);
    }
  }, []);
  const logout = useCallback(async () => {
    await api.POST("/api/v1/auth/logout");
    setMe(null);
  }, []);
  useEffect(() => {
    void refresh();
    const gone = () => setMe(null);
    window.addEventListener("armillary:logged-out", gone);
    return () => window.removeEventListener("armillary:logged-out", gone);
  }, [refresh]);
  return <AuthContext.Provider value={{ me, refresh, logout }}>{children}</AuthContext.Provider>;
}

export const useAuth = () => useContext(AuthContext);
