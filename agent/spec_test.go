package main

// Checks the agent against spec/agent.json: ops, error codes, frame types
// and constants.

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
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
