/**
 * A JSON call between fleet members with a bearer credential (the control plane to a host:
 * fleet/forward.ts `callHost`; a host to its control plane: fleet/hostd.ts): the status, the
 * headers and the JSON body (undefined when there is none or it is not JSON). A call that gets no answer (refused,
 * cut, timed out) throws fetch's error; the caller says what that means.
 */
export async function jsonCall(url: string, credential: string, method: string, body: unknown, timeoutMs: number): Promise<{ status: number; json: unknown; headers: Headers }> {
  const res = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${credential}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  try {
    return { status: res.status, json: text ? (JSON.parse(text) as unknown) : undefined, headers: res.headers };
  } catch {
    return { status: res.status, json: undefined, headers: res.headers };
  }
}
