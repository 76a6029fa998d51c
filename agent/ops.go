package main

// The ops of spec/agent.json with their wire types: every op's request and
// result, and the events. A handler takes its request type and returns its
// result type (newOp), so that these types are all the agent reads and
// sends; spec_test.go checks them, field by field, against the spec (the
// host's TypeScript types are generated from the same spec).

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
)

// opHandler runs one op on its stream. It returns the RESULT payload or an
// error (an *OpError, or any error mapped to io_error).
type opHandler func(st *stream, req json.RawMessage) (interface{}, error)

type opSpec struct {
	handler opHandler
	input   bool // the op consumes DATA (channel 0) from the host
	// the wire types (checked against the spec by the tests)
	request, result reflect.Type
	events          []agentEvent
}

// newOp makes an op of a typed handler: the OPEN payload is decoded into
// Req (failures are bad_request) and the handler's Res is the RESULT. The
// op sends only the events listed (stream.event refuses others).
func newOp[Req, Res any](h func(st *stream, req *Req) (*Res, error), events ...agentEvent) opSpec {
	return opSpec{
		handler: func(st *stream, raw json.RawMessage) (interface{}, error) {
			req := new(Req)
			if err := decodeRequest(raw, req); err != nil {
				return nil, err
			}
			res, err := h(st, req)
			if err != nil {
				return nil, err
			}
			if res == nil {
				res = new(Res)
			}
			return res, nil
		},
		request: reflect.TypeOf((*Req)(nil)).Elem(),
		result:  reflect.TypeOf((*Res)(nil)).Elem(),
		events:  events,
	}
}

// withInput marks an op that consumes DATA from the host.
func withInput(o opSpec) opSpec {
	o.input = true
	return o
}

// opTable holds exactly the ops of spec/agent.json (checked by the tests).
var opTable map[string]opSpec

func init() {
	opTable = map[string]opSpec{
		"sys.info":    newOp(opSysInfo),
		"sys.init":    newOp(opSysInit),
		"sys.freeze":  newOp(opSysFreeze),
		"sys.thaw":    newOp(opSysThaw),
		"sys.warmup":  newOp(opSysWarmup),
		"vol.mount":   newOp(opVolMount),
		"vol.unmount": newOp(opVolUnmount),
		"fs.read":     newOp(opFsRead),
		"fs.write":    withInput(newOp(opFsWrite)),
		"fs.list":     newOp(opFsList, entriesEvent{}),
		"fs.stat":     newOp(opFsStat),
		"fs.mkdir":    newOp(opFsMkdir),
		"fs.remove":   newOp(opFsRemove),
		"fs.rename":   newOp(opFsRename),
		"proc.start":  withInput(newOp(opProcStart, startedEvent{}, lostEvent{})),
		"proc.attach": newOp(opProcAttach, lostEvent{}),
		"proc.stdin":  newOp(opProcStdin),
		"proc.signal": newOp(opProcSignal),
		"proc.list":   newOp(opProcList),
		"net.connect": withInput(newOp(opNetConnect, connectedEvent{}, eofEvent{})),
	}
}

// Requests. A required field is a pointer (nil: missing); an optional one
// is a pointer or takes its zero value as the default.

// emptyRequest is the request of an op without arguments.
type emptyRequest struct{}

type sysInitRequest struct {
	TimeMs    *float64           `json:"timeMs"`
	Entropy   *string            `json:"entropy"`
	Hostname  *string            `json:"hostname"`
	MachineID *string            `json:"machineId"`
	BootID    *string            `json:"bootId"`
	Envs      *map[string]string `json:"envs"`
	// User and Cwd (absent: unchanged) are the defaults of process starts
	// that name none: a built template's USER and WORKDIR.
	User *string `json:"user"`
	Cwd  *string `json:"cwd"`
	// Thaw (default true) lets user processes frozen by a capture run
	// again once the identity is set. False leaves them frozen: a restored
	// VM prepared ahead of demand, whose real sys.init comes later.
	Thaw *bool `json:"thaw"`
}

type sysWarmupRequest struct {
	Cmd       *string  `json:"cmd"`
	TimeoutMs *float64 `json:"timeoutMs"`
}

type volMountRequest struct {
	Tag       *string `json:"tag"`
	Path      *string `json:"path"`
	TimeoutMs *int    `json:"timeoutMs"`
}

// pathRequest is the request of an op on one path (fs.read, fs.stat,
// vol.unmount).
type pathRequest struct {
	Path *string `json:"path"`
}

type fsWriteRequest struct {
	Path   *string `json:"path"`
	Mode   *uint32 `json:"mode"`
	Append bool    `json:"append"`
	Owner  *string `json:"owner"`
}

type fsListRequest struct {
	Path  *string `json:"path"`
	Depth *int    `json:"depth"`
}

type fsMkdirRequest struct {
	Path    *string `json:"path"`
	Parents *bool   `json:"parents"`
	Mode    *uint32 `json:"mode"`
	Owner   *string `json:"owner"`
}

type fsRemoveRequest struct {
	Path      *string `json:"path"`
	Recursive bool    `json:"recursive"`
}

type fsRenameRequest struct {
	From      *string `json:"from"`
	To        *string `json:"to"`
	Overwrite *bool   `json:"overwrite"`
}

type procStartRequest struct {
	Cmd       *string           `json:"cmd"`
	Argv      []string          `json:"argv"`
	Cwd       *string           `json:"cwd"`
	Envs      map[string]string `json:"envs"`
	User      *string           `json:"user"`
	TimeoutMs *float64          `json:"timeoutMs"`
	Stdin     bool              `json:"stdin"`
	Tag       string            `json:"tag"`
}

type procAttachRequest struct {
	Pid    *int  `json:"pid"`
	Replay *bool `json:"replay"`
}

type procStdinRequest struct {
	Pid   *int    `json:"pid"`
	Data  *string `json:"data"`
	Close bool    `json:"close"`
}

type procSignalRequest struct {
	Pid    *int    `json:"pid"`
	Signal *string `json:"signal"`
}

// Results. An optional field has omitempty, a field that may be null is a
// pointer without it; a slice must not be nil (it would be null).

// emptyResult is the result of an op that answers nothing but success.
type emptyResult struct{}

type sysInfoResult struct {
	Version     string   `json:"version"`
	Protocol    int      `json:"protocol"`
	Features    []string `json:"features"`
	BootID      string   `json:"bootId"`
	TimeMs      int64    `json:"timeMs"`
	UptimeMs    int64    `json:"uptimeMs"`
	Hostname    string   `json:"hostname"`
	Initialized bool     `json:"initialized"`
}

type sysInitResult struct {
	TimeMs    int64            `json:"timeMs"`
	TimingsUs map[string]int64 `json:"timingsUs"`
	Thawed    bool             `json:"thawed"`
	Frozen    bool             `json:"frozen"`
}

// frozenResult is the result of sys.freeze and sys.thaw.
type frozenResult struct {
	Frozen bool  `json:"frozen"`
	TookUs int64 `json:"tookUs"`
}

type sysWarmupResult struct {
	ExitCode int   `json:"exitCode"`
	TookUs   int64 `json:"tookUs"`
}

type volMountResult struct {
	Path    string `json:"path"`
	Mounted bool   `json:"mounted"`
	Already bool   `json:"already,omitempty"`
	TookUs  int64  `json:"tookUs,omitempty"`
}

type volUnmountResult struct {
	Path    string `json:"path"`
	Mounted bool   `json:"mounted"`
}

type fsReadResult struct {
	Size int64 `json:"size"`
}

type fsWriteResult struct {
	Size int64  `json:"size"`
	Path string `json:"path"`
}

type fsListResult struct {
	Count int `json:"count"`
}

type fsMkdirResult struct {
	Created bool `json:"created"`
}

type procListResult struct {
	Processes []ProcessInfo `json:"processes"`
}

// Entry is spec type Entry.
type Entry struct {
	Name          string  `json:"name"`
	Path          string  `json:"path"`
	Type          string  `json:"type"`
	Size          int64   `json:"size"`
	Mode          uint32  `json:"mode"`
	MtimeMs       int64   `json:"mtimeMs"`
	SymlinkTarget *string `json:"symlinkTarget,omitempty"`
}

// ProcessInfo is spec type ProcessInfo.
type ProcessInfo struct {
	Pid         int     `json:"pid"`
	Cmd         string  `json:"cmd"`
	Cwd         string  `json:"cwd"`
	Tag         string  `json:"tag"`
	StartedAtMs int64   `json:"startedAtMs"`
	Running     bool    `json:"running"`
	ExitCode    *int    `json:"exitCode"`
	Signal      *string `json:"signal"`
	TimedOut    bool    `json:"timedOut"`
}

// Events: an EVENT payload is {"type": eventType(), ...the fields}.

type agentEvent interface{ eventType() string }

type entriesEvent struct {
	Entries []Entry `json:"entries"`
}

type startedEvent struct {
	Pid int `json:"pid"`
}

type lostEvent struct {
	Bytes int64 `json:"bytes"`
}

func (entriesEvent) eventType() string { return "entries" }
func (startedEvent) eventType() string { return "started" }
func (lostEvent) eventType() string    { return "lost" }

// encodeEvent makes the EVENT payload of ev, an event of the stream's op.
func (st *stream) encodeEvent(ev agentEvent) ([]byte, error) {
	declared := false
	for _, e := range opTable[st.op].events {
		declared = declared || reflect.TypeOf(e) == reflect.TypeOf(ev)
	}
	if !declared {
		return nil, fmt.Errorf("%s does not send %s events", st.op, ev.eventType())
	}
	fields, err := marshalJSON(ev)
	if err != nil {
		return nil, fmt.Errorf("encoding event: %w", err)
	}
	b := append([]byte(`{"type":`), strconv.Quote(ev.eventType())...)
	if len(fields) > 2 { // not {}
		b = append(append(b, ','), fields[1:]...)
	} else {
		b = append(b, '}')
	}
	if len(b) > maxPayloadBytes {
		return nil, fmt.Errorf("encoding event: %d bytes, over the frame limit of %d", len(b), maxPayloadBytes)
	}
	return b, nil
}
