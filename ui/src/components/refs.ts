// Names for the filter and form selects: environments, hypervisors, types (first 1000 of each).
import { api, call } from "../api/client";
import { useLoad } from "../lib";

export function useRefs() {
  return useLoad(async () => {
    const [envs, hvs, types] = await Promise.all([
      call(api.GET("/api/v1/environments", { params: { query: { limit: 1000 } } })),
      call(api.GET("/api/v1/hypervisors", { params: { query: { limit: 1000 } } })),
      call(api.GET("/api/v1/types", { params: { query: { limit: 1000 } } })),
    ]);
    return { envs: envs.items, hypervisors: hvs.items, types: types.items };
  }, []);
}
