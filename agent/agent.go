package main

import (
	"encoding/json"
	"log"
	"os"
	"sync"
)

// Agent is the state shared by all sessions of one `serve` process: the
// process table and what sys.init configured.
type Agent struct {
	version   string
	testRoot  string // NULLSPACE_AGENT_TEST_ROOT: redirect /etc, /run files, skip privileged calls
	workspace string // default cwd of processes
	logger    *log.Logger
	procs     *ProcTable
	sys       sysState

	sessionsMu sync.Mutex
	sessions   int

	streamsWG sync.WaitGroup // running stream goroutines (tests wait on it)
}

// NewAgent creates the agent state. testRoot comes from
// NULLSPACE_AGENT_TEST_ROOT.
func NewAgent(version string, logger *log.Logger) *Agent {
	if logger == nil {
		logger = log.New(os.Stderr, "nullspace-agent: ", 0)
	}
	return &Agent{
		version:   version,
		testRoot:  os.Getenv("NULLSPACE_AGENT_TEST_ROOT"),
		workspace: defaultWorkspace,
		logger:    logger,
		procs:     newProcTable(),
	}
}

func (a *Agent) logf(format string, args ...interface{}) { a.logger.Printf(format, args...) }

func (a *Agent) sessionStarted() {
	a.sessionsMu.Lock()
	a.sessions++
	a.sessionsMu.Unlock()
}

// sessionEnded runs when a host connection ends. The guest cannot tell a
// host reconnect from a snapshot restore (both look like disconnect +
// connect), so once no session is left "initialized" is reset: the host
// must apply sys.init again, which is idempotent.
func (a *Agent) sessionEnded() {
	a.sessionsMu.Lock()
	a.sessions--
	last := a.sessions == 0
	a.sessionsMu.Unlock()
	if last {
		a.sys.setInitialized(false)
	}
}

// decodeRequest unmarshals the OPEN payload into v; failures are
// bad_request.
func decodeRequest(raw json.RawMessage, v interface{}) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return opErrorf(CodeBadRequest, "invalid request: %v", err)
	}
	return nil
}

// missing is the error for an absent required field.
func missing(field string) *OpError {
	return opErrorf(CodeBadRequest, "missing field %q", field)
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}
