// The wire types of src/protocol.ts against the JSON Schemas that shared/protocol generates from
// the Rust types (shared/protocol/schemas, the truth): property names, which are required, the
// literal sets of string enums and the variants of tagged unions, and for each property the kind
// of its type (string, number, array of …, one of the mapped types). The TypeScript side is read
// with the compiler's type checker, so aliases, `Omit`, intersections and mapped types count as
// what they resolve to.
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import ts from "typescript";

import { EVENT_TYPES } from "../src/protocol.js";

// This file runs as build/test/protocol-schema.test.js (tsconfig.test.json's outDir is `build`,
// its rootDir the package), so the package is two folders up either way.
const pkg = join(dirname(fileURLToPath(import.meta.url)), "../..");
const schemaDir = join(pkg, "../../shared/protocol/schemas");
const protocolFile = join(pkg, "src/protocol.ts");

/** Schema definition (a `$defs` name, or a file's `title`) → the TypeScript type it is, as a type
 * expression over `P`, the exports of src/protocol.ts. */
const MAPPED: Record<string, string> = {
  // The files' root types.
  Event: "P.FlowEvent",
  OpsRequest: "P.OpsRequest",
  Flow: "P.Flow",
  HistoryEntry: "P.HistoryEntry",
  Execution: "P.Execution",
  ErrorBody: "P.ErrorBody",
  // Their definitions.
  Actor: "P.Actor",
  ActorKind: "P.ActorKind",
  AppliedOp: "P.AppliedOp",
  Change: "P.Change",
  Conflict: "P.Conflict",
  ConflictReason: "P.ConflictReason",
  Edge: "P.Edge",
  EntityKind: "P.EntityKind",
  EntityRef: "P.EntityRef",
  ErrorDetail: 'P.ErrorBody["error"]',
  ExecutionStatus: "P.ExecutionStatus",
  ExecutionUpdate: "P.ExecutionUpdate",
  FlowDeleted: 'P.EventData["FLOW_DELETED"]',
  LogStream: "P.LogStream",
  NewEdge: "P.NewEdge",
  NewNode: "P.NewNode",
  Node: "P.Node",
  NodeRun: "P.NodeRun",
  NodeStatus: "P.NodeStatus",
  Op: "P.Op",
  Position: "P.Position",
  Presence: "P.Presence",
  PresenceAction: 'P.Presence["action"]',
  Ready: "P.Ready",
  Resync: "P.Resync",
  Size: "P.Size",
  SyncCanvas: "P.SyncCanvas",
  TextTarget: "P.TextTarget",
};

/** Definitions with no TypeScript type of their own, and why. Each must be a plain string
 * schema: a property that refers to one must be a `string` in TypeScript. */
const STRINGS: Record<string, string> = {
  ActorId: "an id: TypeScript keeps ids as plain strings and leaves their pattern to the server",
  ClientId: "an id",
  ConnectionId: "an id",
  EdgeId: "an id",
  ExecutionId: "an id",
  FlowId: "an id",
  NodeId: "an id",
  OpId: "an id",
  Epoch: "an opaque token the stream hands back",
  FieldPath: "a JSON pointer, a string whose form the server checks",
};

/** Exports of src/protocol.ts that no schema describes, and why. */
const TS_ONLY: Record<string, string> = {
  Json: "any JSON value: what a schema without a `type` allows",
  JsonObject: "a free-form object: what `type: object` with `additionalProperties: true` allows",
  OpBody: "Op without op_id and base_version: a building block of Op and OpInput",
  OpInput: "an Op as the SDK takes it (it makes the op id)",
  EventData: "event type → data: a building block of FlowEvent",
  EventType: "the `type` of FlowEvent (its literals are compared with the schema's)",
  EVENT_TYPES: "a runtime value: compared below",
  EventOf: "a generic helper over FlowEvent",
  PresenceEntry: "GET …/presence, which the Rust crates do not publish a schema for",
};

interface Schema {
  $ref?: string;
  type?: string | string[];
  const?: unknown;
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean | Schema;
  items?: Schema | false;
  prefixItems?: Schema[];
  oneOf?: Schema[];
  anyOf?: Schema[];
  default?: unknown;
  title?: string;
  $defs?: Record<string, Schema>;
}

/** Every definition of every schema file, and each file's root under its title. A definition
 * in several files must be the same in each. */
function loadSchemas(): Map<string, Schema> {
  const defs = new Map<string, Schema>();
  const put = (name: string, schema: Schema, file: string) => {
    const seen = defs.get(name);
    if (seen) assert.deepEqual(schema, seen, `${file}: ${name} differs from its copy in another schema file`);
    defs.set(name, schema);
  };
  const files = readdirSync(schemaDir).filter((f) => f.endsWith(".schema.json"));
  assert.ok(files.length > 0, `no schemas in ${schemaDir}`);
  for (const file of files) {
    const { $defs, ...root } = JSON.parse(readFileSync(join(schemaDir, file), "utf8")) as Schema;
    assert.ok(root.title, `${file} has no title`);
    put(root.title, root, file);
    for (const [name, def] of Object.entries($defs ?? {})) put(name, def, file);
  }
  return defs;
}

const schemas = loadSchemas();

// The mapped types, resolved by the type checker through a probe file next to protocol.ts that
// names each: `export type T0 = P.FlowEvent;` …
const probeFile = join(pkg, "src/__schema_probe__.ts");
const names = Object.keys(MAPPED);
const probeText = [
  'import type * as P from "./protocol.js";',
  ...names.map((name, i) => `export type T${i} = ${MAPPED[name]};`),
  "export type TJson = P.Json;",
].join("\n");
const options: ts.CompilerOptions = {
  strict: true,
  noEmit: true,
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.ESNext,
  moduleResolution: ts.ModuleResolutionKind.Bundler,
  lib: ["lib.es2022.d.ts"],
  types: [],
};
const host = ts.createCompilerHost(options);
const { getSourceFile, fileExists, readFile } = host;
host.getSourceFile = (file, ...rest) =>
  file === probeFile ? ts.createSourceFile(file, probeText, ts.ScriptTarget.ES2022, true) : getSourceFile.call(host, file, ...rest);
host.fileExists = (file) => file === probeFile || fileExists.call(host, file);
host.readFile = (file) => (file === probeFile ? probeText : readFile.call(host, file));
const program = ts.createProgram([probeFile], options, host);
const checker = program.getTypeChecker();
const probe = program.getSourceFile(probeFile)!;
const aliases = new Map(
  probe.statements.filter(ts.isTypeAliasDeclaration).map((d) => [d.name.text, checker.getTypeFromTypeNode(d.type)]),
);
const tsOf = new Map(names.map((name, i) => [name, aliases.get(`T${i}`)!]));
const jsonType = aliases.get("TJson")!;

/** Whether the two types accept the same values (as far as assignability tells). */
function same(a: ts.Type, b: ts.Type): boolean {
  // `any` (a missing export resolves to it) would be assignable both ways to anything.
  if ((a.flags | b.flags) & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return false;
  return checker.isTypeAssignableTo(a, b) && checker.isTypeAssignableTo(b, a);
}

function show(type: ts.Type): string {
  return checker.typeToString(type, undefined, ts.TypeFormatFlags.NoTruncation);
}

function refName(schema: Schema): string {
  const ref = schema.$ref!;
  assert.ok(ref.startsWith("#/$defs/"), `unexpected $ref ${ref}`);
  return ref.slice("#/$defs/".length);
}

/** The schema less its `null` alternative: TypeScript writes an absent value as an optional
 * property, and the Rust types skip `None` when they serialise. */
function nonNull(schema: Schema): Schema {
  if (schema.anyOf) {
    const rest = schema.anyOf.filter((s) => s.type !== "null");
    if (rest.length === 1 && rest.length < schema.anyOf.length) return nonNull(rest[0]!);
  }
  if (Array.isArray(schema.type)) {
    const rest = schema.type.filter((t) => t !== "null");
    return { ...schema, type: rest.length === 1 ? rest[0]! : rest };
  }
  return schema;
}

function members(type: ts.Type): readonly ts.Type[] {
  return type.isUnion() ? type.types : [type];
}

/** The string literals of a union; `string & {}` (an open enum: "these, or a newer one") is
 * passed over, anything else is a problem. */
function literals(type: ts.Type, where: string, problems: string[]): Set<string> {
  const out = new Set<string>();
  for (const m of members(type)) {
    if (m.isStringLiteral()) out.add(m.value);
    else if (!(m.isIntersection() && m.types.some((t) => t.flags & ts.TypeFlags.String)))
      problems.push(`${where}: ${show(m)} in a string enum`);
  }
  return out;
}

function compareSets(what: string, where: string, schema: Iterable<string>, typescript: Iterable<string>, problems: string[]) {
  const s = new Set(schema);
  const t = new Set(typescript);
  const missing = [...s].filter((x) => !t.has(x));
  const extra = [...t].filter((x) => !s.has(x));
  if (missing.length) problems.push(`${where}: ${what} in the schema, not in TypeScript: ${missing.join(", ")}`);
  if (extra.length) problems.push(`${where}: ${what} in TypeScript, not in the schema: ${extra.join(", ")}`);
}

/** Compares a schema with the TypeScript type of the same place; what differs goes to `problems`. */
function compare(schema: Schema, type: ts.Type, where: string, problems: string[]): void {
  schema = nonNull(schema);
  type = checker.getNonNullableType(type);
  if (schema.$ref) {
    const name = refName(schema);
    const mapped = tsOf.get(name);
    if (mapped) {
      if (!same(type, mapped)) problems.push(`${where}: ${name} in the schema, ${show(type)} in TypeScript`);
    } else if (name in STRINGS) {
      compare(schemas.get(name)!, type, where, problems);
    } else {
      problems.push(`${where}: ${name} is in neither MAPPED nor STRINGS`);
    }
    return;
  }
  if (schema.oneOf) return compareOneOf(schema, type, where, problems);
  if (schema.const !== undefined) {
    if (!(type.isStringLiteral() && type.value === schema.const))
      problems.push(`${where}: ${JSON.stringify(schema.const)} in the schema, ${show(type)} in TypeScript`);
    return;
  }
  const kind = schema.type;
  if (kind === undefined) {
    // Json itself holds null, which the line above took from `type`.
    if (!same(type, checker.getNonNullableType(jsonType))) problems.push(`${where}: any JSON in the schema, ${show(type)} in TypeScript (want Json)`);
    return;
  }
  if (Array.isArray(kind)) {
    problems.push(`${where}: no rule for the schema type ${JSON.stringify(kind)}`);
    return;
  }
  switch (kind) {
    case "string":
      if (!same(type, checker.getStringType())) problems.push(`${where}: string in the schema, ${show(type)} in TypeScript`);
      return;
    case "integer":
    case "number":
      if (!same(type, checker.getNumberType())) problems.push(`${where}: ${kind} in the schema, ${show(type)} in TypeScript`);
      return;
    case "boolean":
      if (!same(type, checker.getBooleanType())) problems.push(`${where}: boolean in the schema, ${show(type)} in TypeScript`);
      return;
    case "array":
      return compareArray(schema, type, where, problems);
    case "object":
      return schema.properties ? compareObject(schema, type, where, problems) : compareOpenObject(type, where, problems);
    default:
      problems.push(`${where}: no rule for the schema type ${kind}`);
  }
}

function compareArray(schema: Schema, type: ts.Type, where: string, problems: string[]): void {
  if (schema.prefixItems) {
    if (!checker.isTupleType(type)) return void problems.push(`${where}: a tuple in the schema, ${show(type)} in TypeScript`);
    const elements = checker.getTypeArguments(type as ts.TypeReference);
    if (elements.length !== schema.prefixItems.length || schema.items !== false)
      return void problems.push(`${where}: a ${schema.prefixItems.length}-tuple in the schema, ${show(type)} in TypeScript`);
    schema.prefixItems.forEach((item, i) => compare(item, elements[i]!, `${where}[${i}]`, problems));
    return;
  }
  if (!checker.isArrayType(type)) return void problems.push(`${where}: an array in the schema, ${show(type)} in TypeScript`);
  compare(schema.items || {}, checker.getTypeArguments(type as ts.TypeReference)[0]!, `${where}[]`, problems);
}

/** An object with no named properties: free-form data. */
function compareOpenObject(type: ts.Type, where: string, problems: string[]): void {
  const named = checker.getPropertiesOfType(type).map((p) => p.name);
  if (named.length || !checker.getIndexInfoOfType(type, ts.IndexKind.String))
    problems.push(`${where}: a free-form object in the schema, ${show(type)} in TypeScript`);
}

/** Property names, required or optional, and each property's type. A property with a `default`
 * in the schema (`#[serde(default)]` in Rust) may be optional on the way in and is always written
 * on the way out, so it may be either in TypeScript; otherwise required must match required. */
function compareObject(schema: Schema, type: ts.Type, where: string, problems: string[]): void {
  if (type.flags & (ts.TypeFlags.Union | ts.TypeFlags.Any | ts.TypeFlags.Unknown) || !(type.flags & ts.TypeFlags.Object || type.isIntersection()))
    return void problems.push(`${where}: an object in the schema, ${show(type)} in TypeScript`);
  const props = schema.properties ?? {};
  const required = new Set(schema.required ?? []);
  const tsProps = new Map(checker.getPropertiesOfType(type).map((p) => [p.name, p]));
  compareSets("properties", where, Object.keys(props), tsProps.keys(), problems);
  for (const [name, propSchema] of Object.entries(props)) {
    const symbol = tsProps.get(name);
    if (!symbol) continue;
    const optional = (symbol.flags & ts.SymbolFlags.Optional) !== 0;
    const at = `${where}.${name}`;
    if (required.has(name) && optional) problems.push(`${at}: required in the schema, optional in TypeScript`);
    if (!required.has(name) && propSchema.default === undefined && !optional)
      problems.push(`${at}: optional in the schema, required in TypeScript`);
    compare(propSchema, checker.getTypeOfSymbol(symbol), at, problems);
  }
}

/** A string enum (every variant a `const`), a tagged union (every variant an object with one
 * property a `const` in each: `type`, `kind`), or an untagged union of objects told apart by
 * their property names. The schema's own `properties` (the event's envelope) go with each
 * variant. */
function compareOneOf(schema: Schema, type: ts.Type, where: string, problems: string[]): void {
  const variants = schema.oneOf!;
  if (variants.every((v) => v.const !== undefined)) {
    compareSets("values", where, variants.map((v) => String(v.const)), literals(type, where, problems), problems);
    return;
  }
  if (!variants.every((v) => v.type === "object" && v.properties))
    return void problems.push(`${where}: no rule for this oneOf`);
  const withEnvelope = variants.map((v) => ({
    ...v,
    properties: { ...schema.properties, ...v.properties },
    required: [...(schema.required ?? []), ...(v.required ?? [])],
  }));
  const tsMembers = members(type);
  const tag = Object.keys(variants[0]!.properties!).find((p) => variants.every((v) => v.properties![p]?.const !== undefined));
  if (tag) {
    const byTag = new Map<string, ts.Type>();
    for (const m of tsMembers) {
      const symbol = checker.getPropertyOfType(m, tag);
      const tagType = symbol && checker.getTypeOfSymbol(symbol);
      if (!tagType?.isStringLiteral()) problems.push(`${where}: ${show(m)} has no literal \`${tag}\``);
      else byTag.set(tagType.value, m);
    }
    const tags = variants.map((v) => String(v.properties![tag]!.const));
    compareSets(`\`${tag}\`s`, where, tags, byTag.keys(), problems);
    withEnvelope.forEach((v, i) => {
      const m = byTag.get(tags[i]!);
      if (m) compareObject(v, m, `${where}<${tags[i]}>`, problems);
    });
    return;
  }
  const key = (props: Iterable<string>) => [...props].sort().join(",");
  const byKeys = new Map(tsMembers.map((m) => [key(checker.getPropertiesOfType(m).map((p) => p.name)), m]));
  compareSets("variants (by their properties)", where, withEnvelope.map((v) => key(Object.keys(v.properties))), byKeys.keys(), problems);
  for (const v of withEnvelope) {
    const m = byKeys.get(key(Object.keys(v.properties)));
    if (m) compareObject(v, m, `${where}<${key(Object.keys(v.properties))}>`, problems);
  }
}

test("every mapped TypeScript type exists (src/protocol.ts compiles with the probe)", () => {
  const diagnostics = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n"));
  assert.deepEqual(diagnostics, []);
});

test("every schema definition is mapped to a TypeScript type or listed as a plain string", () => {
  const listed = new Set([...names, ...Object.keys(STRINGS)]);
  assert.deepEqual([...schemas.keys()].filter((n) => !listed.has(n)).sort(), [], "add these to MAPPED or STRINGS");
  assert.deepEqual([...listed].filter((n) => !schemas.has(n)).sort(), [], "no schema defines these any more");
  for (const name of Object.keys(STRINGS)) {
    const s = schemas.get(name)!;
    assert.equal(s.type, "string", `${name} is listed in STRINGS but is not a string schema`);
    assert.ok(!s.oneOf && !s.properties, `${name} is listed in STRINGS but is not a plain string`);
  }
});

test("every export of src/protocol.ts is a mapped type or listed as TypeScript-only", () => {
  const module = checker.getSymbolAtLocation(program.getSourceFile(protocolFile)!)!;
  const exported = checker.getExportsOfModule(module).map((s) => s.name);
  const mapped = new Set(Object.values(MAPPED).map((e) => /^P\.(\w+)$/.exec(e)?.[1]));
  assert.deepEqual(exported.filter((n) => !mapped.has(n) && !(n in TS_ONLY)).sort(), [], "map these or add them to TS_ONLY");
  assert.deepEqual(Object.keys(TS_ONLY).filter((n) => !exported.includes(n)).sort(), [], "TS_ONLY names what protocol.ts no longer exports");
});

for (const name of names) {
  test(`${name} (schema) matches ${MAPPED[name]}`, () => {
    const problems: string[] = [];
    compare(schemas.get(name)!, tsOf.get(name)!, name, problems);
    assert.deepEqual(problems, []);
  });
}

test("EVENT_TYPES lists the schema's event types", () => {
  const event = schemas.get("Event")!;
  const types = event.oneOf!.map((v) => String(v.properties!.type!.const));
  assert.deepEqual([...EVENT_TYPES].sort(), types.sort());
});
