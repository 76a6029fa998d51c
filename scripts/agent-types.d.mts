// Types of scripts/agent-types.mjs, for the tests that import it.
export type FieldType =
  | { kind: 'string' | 'number' | 'boolean' | 'null' }
  | { kind: 'literal'; value: string }
  | { kind: 'ref'; name: string }
  | { kind: 'array' | 'map'; of: FieldType }
  | { kind: 'union'; of: FieldType[] };
export interface Field {
  type: FieldType;
  optional: boolean;
  notes: string;
  description: string;
}
export type Shape = ({ kind: 'type' } & Field) | { kind: 'fields'; fields: Array<{ name: string } & Field> };
export interface SpecModel {
  types: Array<{ name: string; fields: Array<{ name: string } & Field> }>;
  events: Array<{ name: string; fields: Array<{ name: string } & Field> }>;
  ops: Array<{ name: string; comment: string; request: Shape; result: Shape; events: string[] }>;
}
export const SPEC_FILE: string;
export const OUTPUT_FILE: string;
export function parseField(text: string, typeNames: string[]): Field;
export function readSpec(spec: unknown): SpecModel;
export function generate(spec: unknown): string;
