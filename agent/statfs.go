package main

import "syscall"

// fsStatfsResult is what fs.statfs answers: the file system holding a path,
// as df sees it.
type fsStatfsResult struct {
	TotalBytes  uint64 `json:"totalBytes"`
	UsedBytes   uint64 `json:"usedBytes"`
	AvailBytes  uint64 `json:"availBytes"`
	TotalInodes uint64 `json:"totalInodes"`
	FreeInodes  uint64 `json:"freeInodes"`
}

func init() {
	// ops.go's init (which makes the table) runs first: a package's files
	// initialize in the order of their names.
	opTable["fs.statfs"] = newOp(opFsStatfs)
}

func opFsStatfs(st *stream, req *pathRequest) (*fsStatfsResult, error) {
	p, err := cleanPath("path", req.Path)
	if err != nil {
		return nil, err
	}
	var s syscall.Statfs_t
	if err := syscall.Statfs(p, &s); err != nil {
		return nil, toOpError("statfs "+p, err)
	}
	bs := uint64(s.Bsize)
	return &fsStatfsResult{
		TotalBytes:  s.Blocks * bs,
		UsedBytes:   (s.Blocks - s.Bfree) * bs,
		AvailBytes:  s.Bavail * bs,
		TotalInodes: s.Files,
		FreeInodes:  s.Ffree,
	}, nil
}
