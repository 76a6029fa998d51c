/** The operations of the server's OpenAPI document, as the fuzzer needs them. */

export interface Schema {
  type?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean | Schema;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  enum?: unknown[];
  anyOf?: Schema[];
  items?: Schema;
  maxProperties?: number;
  default?: unknown;
  'x-mode'?: boolean;
}

export interface Param {
  name: string;
  schema: Schema;
  required: boolean;
}

export interface Op {
  /** "POST /v1/sandboxes/{id}/fork" */
  route: string;
  method: string;
  /** "/v1/sandboxes/{id}/fork" */
  template: string;
  pathParams: Param[];
  query: Param[];
  /** The JSON body's schema (routes that take one). */
  body?: Schema | undefined;
  /** The body is raw bytes (the file upload). */
  rawBody: boolean;
}

interface Doc {
  paths: Record<string, Record<string, { parameters?: Array<{ in: string; name: string; required?: boolean; schema: Schema }>; requestBody?: { content?: Record<string, { schema?: Schema }> } }>>;
}

export function operations(doc: unknown): Op[] {
  const ops: Op[] = [];
  for (const [template, methods] of Object.entries((doc as Doc).paths ?? {})) {
    for (const [m, op] of Object.entries(methods)) {
      const method = m.toUpperCase();
      if (!['GET', 'POST', 'PUT', 'DELETE', 'PATCH'].includes(method)) continue;
      const params = op.parameters ?? [];
      const json = op.requestBody?.content?.['application/json']?.schema;
      ops.push({
        route: `${method} ${template}`,
        method,
        template,
        pathParams: params.filter((p) => p.in === 'path').map((p) => ({ name: p.name, schema: p.schema, required: true })),
        query: params.filter((p) => p.in === 'query').map((p) => ({ name: p.name, schema: p.schema, required: p.required === true })),
        body: json,
        // (the upload declares no JSON body: it takes any bytes; PUT /network takes JSON)
        rawBody: method === 'PUT' && !json,
      });
    }
  }
  return ops;
}

/** Every integer or number field of the requests' schemas that has no upper (or lower) bound. */
export function unboundedNumbers(ops: Op[]): string[] {
  const out: string[] = [];
  const walk = (s: Schema | undefined, where: string) => {
    if (!s) return;
    if (s.type === 'integer' || s.type === 'number') {
      if (s.maximum === undefined || s.minimum === undefined) out.push(where);
    }
    for (const [k, v] of Object.entries(s.properties ?? {})) walk(v, `${where}.${k}`);
    if (typeof s.additionalProperties === 'object') walk(s.additionalProperties, `${where}.*`);
    for (const [i, v] of (s.anyOf ?? []).entries()) walk(v, `${where}|${i}`);
    walk(s.items, `${where}[]`);
  };
  for (const op of ops) {
    for (const p of [...op.pathParams, ...op.query]) walk(p.schema, `${op.route} ${p.name}`);
    walk(op.body, `${op.route} body`);
  }
  return out;
}
