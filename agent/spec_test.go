package main

// Checks the agent against spec/agent.json: ops, error codes, frame types,
// constants, and every op's request, result and events field by field.

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

type specFile struct {
	Transport struct {
		Magic string `json:"magic"`
	} `json:"transport"`
	Frame struct {
		HeaderBytes     int `json:"headerBytes"`
		MaxPayloadBytes int `json:"maxPayloadBytes"`
	} `json:"frame"`
	FrameTypes map[string]struct {
		Value int    `json:"value"`
		From  string `json:"from"`
	} `json:"frameTypes"`
	FlowControl struct {
		InitialWindowBytes int `json:"initialWindowBytes"`
	} `json:"flowControl"`
	Limits struct {
		OutputBufferBytes int `json:"outputBufferBytes"`
		MaxDataFrameBytes int `json:"maxDataFrameBytes"`
	} `json:"limits"`
	FilesAPI struct {
		SystemDirs []string `json:"systemDirs"`
		UserDir    string   `json:"userDir"`
	} `json:"filesApi"`
	Version    int                        `json:"version"`
	ErrorCodes map[string]string          `json:"errorCodes"`
	Ops        map[string]json.RawMessage `json:"ops"`
}

func loadSpec(t *testing.T) *specFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "spec", "agent.json"))
	if err != nil {
		t.Fatalf("read spec: %v", err)
	}
	var s specFile
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("parse spec: %v", err)
	}
	return &s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestSpecOps(t *testing.T) {
	s := loadSpec(t)
	want, got := sortedKeys(s.Ops), sortedKeys(opTable)
	if strings.Join(want, ",") != strings.Join(got, ",") {
		t.Fatalf("op table %v, spec ops %v", got, want)
	}
}

func TestSpecFrameTypes(t *testing.T) {
	s := loadSpec(t)
	if len(s.FrameTypes) != len(frameTypeNames) {
		t.Fatalf("spec has %d frame types, agent %d", len(s.FrameTypes), len(frameTypeNames))
	}
	for name, ft := range s.FrameTypes {
		v, ok := frameTypeNames[name]
		if !ok || int(v) != ft.Value {
			t.Errorf("frame type %s: spec %d, agent %d (known %v)", name, ft.Value, v, ok)
		}
	}
}

func TestSpecConstants(t *testing.T) {
	s := loadSpec(t)
	checks := []struct {
		name      string
		spec, got int
	}{
		{"version", s.Version, protocolVersion},
		{"headerBytes", s.Frame.HeaderBytes, frameHeaderBytes},
		{"maxPayloadBytes", s.Frame.MaxPayloadBytes, maxPayloadBytes},
		{"initialWindowBytes", s.FlowControl.InitialWindowBytes, initialWindowBytes},
		{"outputBufferBytes", s.Limits.OutputBufferBytes, outputBufferBytes},
		{"maxDataFrameBytes", s.Limits.MaxDataFrameBytes, maxDataFrameBytes},
	}
	for _, c := range checks {
		if c.spec != c.got {
			t.Errorf("%s: spec %d, agent %d", c.name, c.spec, c.got)
		}
	}
	if s.Transport.Magic != magic {
		t.Errorf("magic: spec %q, agent %q", s.Transport.Magic, magic)
	}
}

// TestSpecErrorCodes checks that every ErrCode constant declared in the
// package source is a spec error code, that allErrorCodes lists them all,
// and that the agent covers every spec code.
func TestSpecErrorCodes(t *testing.T) {
	s := loadSpec(t)
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi os.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, 0)
	if err != nil {
		t.Fatalf("parse package: %v", err)
	}
	declared := map[string]bool{}
	for _, pkg := range pkgs {
		for _, f := range pkg.Files {
			ast.Inspect(f, func(n ast.Node) bool {
				vs, ok := n.(*ast.ValueSpec)
				if !ok {
					return true
				}
				if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "ErrCode" {
					return true
				}
				for _, v := range vs.Values {
					lit, ok := v.(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Errorf("ErrCode constant with a non-literal value at %v", fset.Position(v.Pos()))
						continue
					}
					declared[strings.Trim(lit.Value, `"`)] = true
				}
				return true
			})
		}
	}
	listed := map[string]bool{}
	for _, c := range allErrorCodes {
		listed[string(c)] = true
	}
	for code := range declared {
		if _, ok := s.ErrorCodes[code]; !ok {
			t.Errorf("agent declares error code %q, not in the spec", code)
		}
		if !listed[code] {
			t.Errorf("error code %q missing from allErrorCodes", code)
		}
	}
	for code := range s.ErrorCodes {
		if !declared[code] {
			t.Errorf("spec error code %q not declared by the agent", code)
		}
	}
	// Error codes must only be produced through ErrCode constants: no
	// untyped string literal of a code may appear in OpError literals.
	for _, pkg := range pkgs {
		for _, f := range pkg.Files {
			ast.Inspect(f, func(n ast.Node) bool {
				kv, ok := n.(*ast.KeyValueExpr)
				if !ok {
					return true
				}
				if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Code" {
					if _, isLit := kv.Value.(*ast.BasicLit); isLit {
						t.Errorf("literal error code at %v", fset.Position(kv.Pos()))
					}
				}
				return true
			})
		}
	}
}

// TestSpecPathLists checks the agent's lists of guarded paths against the
// spec: the system directories of the files API and the paths no volume is
// mounted at.
func TestSpecPathLists(t *testing.T) {
	s := loadSpec(t)
	if strings.Join(s.FilesAPI.SystemDirs, ",") != strings.Join(systemDirs, ",") || s.FilesAPI.UserDir != userSharedDir {
		t.Errorf("files API: spec %v (user dir %s), agent %v (%s)", s.FilesAPI.SystemDirs, s.FilesAPI.UserDir, systemDirs, userSharedDir)
	}
	var mount struct {
		ReservedPaths []string `json:"reservedPaths"`
	}
	if err := json.Unmarshal(s.Ops["vol.mount"], &mount); err != nil {
		t.Fatalf("vol.mount: %v", err)
	}
	if strings.Join(mount.ReservedPaths, ",") != strings.Join(reservedMountDirs, ",") {
		t.Errorf("vol.mount reserved paths: spec %v, agent %v", mount.ReservedPaths, reservedMountDirs)
	}
}

// The field grammar of spec/agent.json ("fieldTypes"): TYPE [(NOTES)]
// [: DESCRIPTION], parsed as scripts/agent-types.mjs parses it for the
// host's generated TypeScript types.
type fieldType struct {
	kind  string // string, number, boolean, null, literal, ref, array, map, union
	value string // a literal's value, a ref's type name
	of    []*fieldType
}

type specField struct {
	typ      *fieldType
	optional bool
}

var fieldRest = regexp.MustCompile(`(?s)^(?: \(([^()]*)\))?(?:: (.*))?$`)
var fieldWord = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]*`)

func parseField(text string, typeNames map[string]bool) (f specField, err error) {
	i := 0
	type parseError struct{ error }
	defer func() {
		if r := recover(); r != nil {
			pe, ok := r.(parseError)
			if !ok {
				panic(r)
			}
			err = pe.error
		}
	}()
	fail := func(what string) {
		panic(parseError{fmt.Errorf("%q: %s at offset %d", text, what, i)})
	}
	spaces := func() {
		for i < len(text) && text[i] == ' ' {
			i++
		}
	}
	word := func() string {
		w := fieldWord.FindString(text[i:])
		if w == "" {
			fail("a type expected")
		}
		i += len(w)
		return w
	}
	var item func() *fieldType
	base := func() *fieldType {
		spaces()
		if i < len(text) && text[i] == '"' {
			end := strings.IndexByte(text[i+1:], '"')
			if end < 0 {
				fail("unterminated literal")
			}
			v := text[i+1 : i+1+end]
			i += end + 2
			return &fieldType{kind: "literal", value: v}
		}
		switch w := word(); {
		case w == "string" || w == "number" || w == "boolean" || w == "null":
			return &fieldType{kind: w}
		case w == "object":
			spaces()
			if word() != "string" || !strings.HasPrefix(text[i:], "->") {
				fail("object string->T expected")
			}
			i += 2
			return &fieldType{kind: "map", of: []*fieldType{item()}}
		case typeNames[w]:
			return &fieldType{kind: "ref", value: w}
		default:
			fail("unknown type " + w)
			return nil
		}
	}
	item = func() *fieldType {
		t := base()
		for strings.HasPrefix(text[i:], "[]") {
			i += 2
			t = &fieldType{kind: "array", of: []*fieldType{t}}
		}
		return t
	}
	alternatives := []*fieldType{item()}
	for {
		at := i
		spaces()
		if i >= len(text) || text[i] != '|' {
			i = at
			break
		}
		i++
		alternatives = append(alternatives, item())
	}
	m := fieldRest.FindStringSubmatch(text[i:])
	if m == nil {
		fail(`expected " (NOTES)", ": DESCRIPTION" or the end`)
	}
	f.typ = alternatives[0]
	if len(alternatives) > 1 {
		f.typ = &fieldType{kind: "union", of: alternatives}
	}
	f.optional = strings.TrimSpace(strings.Split(m[1], ",")[0]) == "optional"
	return f, nil
}

func TestSpecFieldGrammar(t *testing.T) {
	names := map[string]bool{"Entry": true}
	for text, want := range map[string]string{
		`string`:                                       "string",
		`number | null (optional, default 1): x`:       "union(number,null)?",
		`"a" | "b": c (d)`:                             "union(literal a,literal b)",
		`Entry[]: e`:                                   "array(ref Entry)",
		`object string->number (diagnostic): f`:        "map(number)",
		`object string->string[] (optional)`:           "map(array(string))?",
		`boolean (optional, default true): g: h`:       "boolean?",
		`string (optional, 0 = none, see (x)) : ` + "": "",
		`array of strings`:                             "",
		`ProcessInfo of the ended process`:             "",
		`Entry of the path`:                            "",
		`"unterminated`:                                "",
	} {
		f, err := parseField(text, names)
		got := ""
		if err == nil {
			got = describeType(f.typ)
			if f.optional {
				got += "?"
			}
		}
		if got != want {
			t.Errorf("%s: got %q (%v), want %q", text, got, err, want)
		}
	}
}

func describeType(t *fieldType) string {
	switch t.kind {
	case "literal", "ref":
		return t.kind + " " + t.value
	case "array", "map", "union":
		parts := []string{}
		for _, o := range t.of {
			parts = append(parts, describeType(o))
		}
		return t.kind + "(" + strings.Join(parts, ",") + ")"
	}
	return t.kind
}

// payloadSpec is what TestSpecPayloads reads of the spec.
type payloadSpec struct {
	Types  map[string]map[string]string `json:"types"`
	Events map[string]json.RawMessage   `json:"events"`
	Ops    map[string]struct {
		Request map[string]string `json:"request"`
		Result  json.RawMessage   `json:"result"`
		Events  []string          `json:"events"`
	} `json:"ops"`
}

// payloadChecker compares the agent's wire types with the spec's fields.
type payloadChecker struct {
	t     *testing.T
	spec  payloadSpec
	names map[string]bool
}

// fields compares struct type rt with the spec fields; sends: the agent
// sends it (a result, an event, a type), else it reads it (a request).
func (c *payloadChecker) fields(where string, rt reflect.Type, fields map[string]string, sends bool) {
	if rt.Kind() != reflect.Struct {
		c.t.Errorf("%s: the agent's %v is not a struct", where, rt)
		return
	}
	goFields := map[string]reflect.StructField{}
	for i := 0; i < rt.NumField(); i++ {
		sf := rt.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" || sf.Anonymous {
			c.t.Errorf("%s: field %s of %v has no json name", where, sf.Name, rt)
			continue
		}
		goFields[name] = sf
	}
	for _, name := range sortedKeys(fields) {
		if strings.HasPrefix(name, "$") {
			continue
		}
		sf, ok := goFields[name]
		if !ok {
			c.t.Errorf("%s: spec field %q is not in the agent's %v", where, name, rt)
			continue
		}
		delete(goFields, name)
		f, err := parseField(fields[name], c.names)
		if err != nil {
			c.t.Errorf("%s.%s: %v", where, name, err)
			continue
		}
		_, opts, _ := strings.Cut(sf.Tag.Get("json"), ",")
		omitempty := strings.Contains(","+opts+",", ",omitempty,")
		ft := sf.Type
		if sends {
			if f.optional != omitempty {
				c.t.Errorf("%s.%s: spec optional %v, the agent's omitempty %v", where, name, f.optional, omitempty)
			}
		} else if !f.optional && ft.Kind() != reflect.Pointer {
			c.t.Errorf("%s.%s: required, so the agent must tell it missing (a pointer), not %v", where, name, ft)
		}
		c.value(where+"."+name, ft, f.typ, sends, f.optional)
	}
	for _, name := range sortedKeys(goFields) {
		c.t.Errorf("%s: the agent's field %q (%v) is not in the spec", where, name, rt)
	}
}

// value compares Go type gt with the spec type st.
func (c *payloadChecker) value(where string, gt reflect.Type, st *fieldType, sends, optional bool) {
	nullable := false
	if st.kind == "union" {
		var rest []*fieldType
		for _, o := range st.of {
			if o.kind == "null" {
				nullable = true
			} else {
				rest = append(rest, o)
			}
		}
		switch {
		case len(rest) == 1:
			st = rest[0]
		case allLiterals(rest):
			st = &fieldType{kind: "string"}
		default:
			c.t.Errorf("%s: the agent has no type for %s", where, describeType(st))
			return
		}
	}
	if gt.Kind() == reflect.Pointer {
		// a request's pointers tell a field missing; a result's send null (or,
		// omitempty, nothing)
		if sends && !nullable && !optional {
			c.t.Errorf("%s: a pointer (may send null), the spec's %s is never null", where, describeType(st))
		}
		gt = gt.Elem()
	} else if nullable && sends {
		c.t.Errorf("%s: the spec says it may be null, the agent's %v never is", where, gt)
	}
	ok := true
	switch st.kind {
	case "string", "literal":
		ok = gt.Kind() == reflect.String
	case "number":
		switch gt.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		default:
			ok = false
		}
	case "boolean":
		ok = gt.Kind() == reflect.Bool
	case "array":
		if ok = gt.Kind() == reflect.Slice; ok {
			c.value(where+"[]", gt.Elem(), st.of[0], sends, false)
		}
	case "map":
		if ok = gt.Kind() == reflect.Map && gt.Key().Kind() == reflect.String; ok {
			c.value(where+"{}", gt.Elem(), st.of[0], sends, false)
		}
	case "ref":
		c.fields(where+" ("+st.value+")", gt, c.spec.Types[st.value], sends)
	default:
		ok = false
	}
	if !ok {
		c.t.Errorf("%s: the agent's %v is not the spec's %s", where, gt, describeType(st))
	}
}

func allLiterals(ts []*fieldType) bool {
	for _, t := range ts {
		if t.kind != "literal" {
			return false
		}
	}
	return len(ts) > 0
}

// TestSpecPayloads checks every op's request, result and events, field by
// field and type by type, against the agent's wire types (ops.go): a field
// in the spec the agent does not read or send fails, and so does one the
// agent reads or sends that the spec does not list.
func TestSpecPayloads(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "spec", "agent.json"))
	if err != nil {
		t.Fatal(err)
	}
	c := &payloadChecker{t: t, names: map[string]bool{}}
	if err := json.Unmarshal(b, &c.spec); err != nil {
		t.Fatal(err)
	}
	for name := range c.spec.Types {
		c.names[name] = true
	}
	specEvents := map[string]map[string]string{}
	for name, raw := range c.spec.Events {
		if strings.HasPrefix(name, "$") {
			continue
		}
		var fields map[string]string
		if err := json.Unmarshal(raw, &fields); err != nil {
			t.Fatalf("event %s: %v", name, err)
		}
		specEvents[name] = fields
	}
	for _, name := range sortedKeys(c.spec.Ops) {
		op, impl := c.spec.Ops[name], opTable[name]
		if impl.handler == nil {
			continue // TestSpecOps reports it
		}
		c.fields(name+" request", impl.request, op.Request, false)
		var result interface{}
		if err := json.Unmarshal(op.Result, &result); err != nil {
			t.Fatalf("%s result: %v", name, err)
		}
		switch r := result.(type) {
		case string:
			f, err := parseField(r, c.names)
			if err != nil {
				t.Errorf("%s result: %v", name, err)
				continue
			}
			c.value(name+" result", impl.result, f.typ, true, false)
		case map[string]interface{}:
			fields := map[string]string{}
			for k, v := range r {
				s, _ := v.(string)
				fields[k] = s
			}
			c.fields(name+" result", impl.result, fields, true)
		default:
			t.Errorf("%s result: an object of fields or a type expected", name)
		}
		var sends []string
		for _, ev := range impl.events {
			sends = append(sends, ev.eventType())
			if fields, ok := specEvents[ev.eventType()]; ok {
				c.fields(name+" event "+ev.eventType(), reflect.TypeOf(ev), fields, true)
			}
		}
		if strings.Join(sends, ",") != strings.Join(op.Events, ",") {
			t.Errorf("%s: sends events %v, the spec lists %v", name, sends, op.Events)
		}
	}
}

// TestEventsOfTheirOps checks that a stream sends only the events its op
// declares.
func TestEventsOfTheirOps(t *testing.T) {
	if _, err := (&stream{op: "proc.attach"}).encodeEvent(lostEvent{Bytes: 3}); err != nil {
		t.Errorf("lost on proc.attach: %v", err)
	}
	b, err := (&stream{op: "fs.list"}).encodeEvent(entriesEvent{Entries: []Entry{}})
	if err != nil || string(b) != `{"type":"entries","entries":[]}` {
		t.Errorf("entries on fs.list: %s, %v", b, err)
	}
	if _, err := (&stream{op: "proc.attach"}).encodeEvent(startedEvent{Pid: 1}); err == nil {
		t.Error("started on proc.attach: no error")
	}
}

// TestSpecSignals checks proc.signal's signals against the spec's.
func TestSpecSignals(t *testing.T) {
	s := loadSpec(t)
	var op struct {
		Request map[string]string `json:"request"`
	}
	if err := json.Unmarshal(s.Ops["proc.signal"], &op); err != nil {
		t.Fatal(err)
	}
	f, err := parseField(op.Request["signal"], nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range f.typ.of {
		names = append(names, o.value)
	}
	if strings.Join(names, ",") != strings.Join(signalsAllowed, ",") {
		t.Errorf("proc.signal: spec %v, agent %v", names, signalsAllowed)
	}
}
