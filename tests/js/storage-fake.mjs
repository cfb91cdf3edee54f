// chrome.storage areas in memory (not a test file itself; no side effects): the worker tests share it.
// Values are cloned in and out, as Chrome serialises them; `listeners` receive onChanged events.
export function storageArea(map, listeners = null) {
  return {
    async get(keys) {
      const list = Array.isArray(keys) ? keys : [keys];
      return Object.fromEntries(list.filter((k) => map.has(k)).map((k) => [k, structuredClone(map.get(k))]));
    },
    async set(obj) {
      const changes = {};
      for (const [k, v] of Object.entries(obj)) {
        changes[k] = { oldValue: map.get(k), newValue: structuredClone(v) };
        map.set(k, structuredClone(v));
      }
      for (const fn of listeners ?? []) fn(changes);
    },
    async remove(keys) { for (const k of [].concat(keys)) map.delete(k); },
    onChanged: { addListener: (fn) => listeners?.push(fn) },
  };
}
