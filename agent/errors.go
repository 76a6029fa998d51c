package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"
)

// ErrCode is one of spec/agent.json "errorCodes". Every code the agent can
// send is declared here (the tests check them against the spec).
type ErrCode string

const (
	CodeBadRequest       ErrCode = "bad_request"
	CodeUnknownOp        ErrCode = "unknown_op"
	CodeNotFound         ErrCode = "not_found"
	CodeAlreadyExists    ErrCode = "already_exists"
	CodeNotADirectory    ErrCode = "not_a_directory"
	CodeIsADirectory     ErrCode = "is_a_directory"
	CodeNotEmpty         ErrCode = "not_empty"
	CodePermissionDenied ErrCode = "permission_denied"
	CodeNoSpace          ErrCode = "no_space"
	CodeInvalidPath      ErrCode = "invalid_path"
	CodeProcessFailed    ErrCode = "process_failed"
	CodeNotRunning       ErrCode = "not_running"
	CodeCancelled        ErrCode = "cancelled"
	CodeIOError          ErrCode = "io_error"
	CodeVolumeBusy       ErrCode = "volume_busy"
	CodePortNotOpen      ErrCode = "port_not_open"
)

// allErrorCodes lists every ErrCode constant.
var allErrorCodes = []ErrCode{
	CodeBadRequest, CodeUnknownOp, CodeNotFound, CodeAlreadyExists,
	CodeNotADirectory, CodeIsADirectory, CodeNotEmpty, CodePermissionDenied,
	CodeNoSpace, CodeInvalidPath, CodeProcessFailed, CodeNotRunning,
	CodeCancelled, CodeIOError, CodeVolumeBusy, CodePortNotOpen,
}

// OpError is the payload of an ERROR frame.
type OpError struct {
	Code    ErrCode `json:"code"`
	Message string  `json:"message"`
}

func (e *OpError) Error() string { return string(e.Code) + ": " + e.Message }

func opErrorf(code ErrCode, format string, args ...interface{}) *OpError {
	return &OpError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// errnoCode maps an errno to the spec's error code; ok is false for errnos
// that have no specific code.
func errnoCode(errno syscall.Errno) (ErrCode, bool) {
	switch errno {
	case syscall.ENOENT:
		return CodeNotFound, true
	case syscall.EEXIST:
		return CodeAlreadyExists, true
	case syscall.ENOTDIR:
		return CodeNotADirectory, true
	case syscall.EISDIR:
		return CodeIsADirectory, true
	case syscall.ENOTEMPTY:
		return CodeNotEmpty, true
	case syscall.EACCES, syscall.EPERM:
		return CodePermissionDenied, true
	case syscall.ENOSPC, syscall.EDQUOT:
		return CodeNoSpace, true
	case syscall.ENAMETOOLONG, syscall.ELOOP:
		// a name or path too long, or a loop of symbolic links: the request's path
		return CodeInvalidPath, true
	}
	return "", false
}

// pathOpError is toOpError for a rename or remove of paths the request
// names, where EXDEV (across file systems), EINVAL (a directory into itself)
// and EBUSY (a mount point) are the request's fault. (Elsewhere, in mounts,
// cgroups or the clock, they are faults of the guest and stay io_error.)
func pathOpError(what string, err error) *OpError {
	var errno syscall.Errno
	if errors.As(err, &errno) && (errno == syscall.EXDEV || errno == syscall.EINVAL || errno == syscall.EBUSY) {
		oe := toOpError(what, err)
		return &OpError{Code: CodeBadRequest, Message: oe.Message}
	}
	return toOpError(what, err)
}

// toOpError converts any error into an OpError. what describes the failed
// action (e.g. "open /x"), and is prefixed to the message when the error
// itself does not already carry the path.
func toOpError(what string, err error) *OpError {
	var oe *OpError
	if errors.As(err, &oe) {
		return oe
	}
	if errors.Is(err, context.Canceled) {
		return &OpError{Code: CodeCancelled, Message: what + ": cancelled"}
	}
	msg := err.Error()
	var pe *fs.PathError
	var le *os.LinkError
	if !errors.As(err, &pe) && !errors.As(err, &le) && what != "" {
		msg = what + ": " + msg
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if code, ok := errnoCode(errno); ok {
			return &OpError{Code: code, Message: msg}
		}
	}
	return &OpError{Code: CodeIOError, Message: msg}
}

// msDuration is a request's milliseconds as a Duration, capped at 100 days
// (a larger float would overflow into a negative Duration: no limit, or
// none at all).
func msDuration(ms float64) time.Duration {
	const max = 100 * 24 * time.Hour
	if ms >= float64(max/time.Millisecond) {
		return max
	}
	return time.Duration(ms * float64(time.Millisecond))
}
