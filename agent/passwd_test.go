package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// withUserDB points the user lookup at a passwd and a group file (nil: no such file) for one test.
func withUserDB(t *testing.T, passwd, group *string) {
	t.Helper()
	dir := t.TempDir()
	oldP, oldG := passwdFile, groupFile
	t.Cleanup(func() { passwdFile, groupFile = oldP, oldG })
	passwdFile, groupFile = filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	if passwd != nil {
		if err := os.WriteFile(passwdFile, []byte(*passwd), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if group != nil {
		if err := os.WriteFile(groupFile, []byte(*group), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func strp(s string) *string { return &s }

func TestLookupUserForms(t *testing.T) {
	withUserDB(t,
		strp("root:x:0:0:root:/root:/bin/bash\napp:x:1000:1000::/home/app:/bin/sh\n"),
		strp("root:x:0:\napp:x:1000:\nstaff:x:50:app\nweb:x:33:\n"))
	cases := []struct {
		spec string
		want userInfo
	}{
		{"root", userInfo{Name: "root", Uid: 0, Gid: 0, Home: "/root", Shell: "/bin/bash", Groups: []uint32{0}}},
		{"app", userInfo{Name: "app", Uid: 1000, Gid: 1000, Home: "/home/app", Shell: "/bin/sh", Groups: []uint32{1000, 50}}},
		// Docker's USER forms: a uid (found in passwd, or not), name:group, uid:gid
		{"1000", userInfo{Name: "app", Uid: 1000, Gid: 1000, Home: "/home/app", Shell: "/bin/sh", Groups: []uint32{1000, 50}}},
		{"0", userInfo{Name: "root", Uid: 0, Gid: 0, Home: "/root", Shell: "/bin/bash", Groups: []uint32{0}}},
		{"4242", userInfo{Name: "4242", Uid: 4242, Gid: 0, Home: "/", Groups: []uint32{0}}},
		{"app:web", userInfo{Name: "app", Uid: 1000, Gid: 33, Home: "/home/app", Shell: "/bin/sh", Groups: []uint32{33, 50}}},
		{"app:77", userInfo{Name: "app", Uid: 1000, Gid: 77, Home: "/home/app", Shell: "/bin/sh", Groups: []uint32{77, 50}}},
		{"4242:4343", userInfo{Name: "4242", Uid: 4242, Gid: 4343, Home: "/", Groups: []uint32{4343}}},
	}
	for _, c := range cases {
		u, err := lookupUser(c.spec)
		if err != nil {
			t.Errorf("%q: %v", c.spec, err)
			continue
		}
		if !reflect.DeepEqual(*u, c.want) {
			t.Errorf("%q: %+v, want %+v", c.spec, *u, c.want)
		}
	}
	for _, bad := range []string{"nobody", "app:nogroup", ":0", "app:", "-1", "1000:-5", "99999999999", "a:b:c"} {
		if u, err := lookupUser(bad); err == nil {
			t.Errorf("%q: %+v, want an error", bad, *u)
		} else if !strings.Contains(err.Error(), "unknown") && !strings.Contains(err.Error(), "invalid") {
			t.Errorf("%q: unclear error %v", bad, err)
		}
	}
}

// An image without a user database (busybox, distroless): root and numeric ids still work.
func TestLookupUserWithoutPasswd(t *testing.T) {
	withUserDB(t, nil, nil)
	for spec, want := range map[string]userInfo{
		"root":    {Name: "root", Uid: 0, Gid: 0, Home: "/root", Groups: []uint32{0}},
		"0":       {Name: "root", Uid: 0, Gid: 0, Home: "/root", Groups: []uint32{0}},
		"1000":    {Name: "1000", Uid: 1000, Gid: 0, Home: "/", Groups: []uint32{0}},
		"65534:7": {Name: "65534", Uid: 65534, Gid: 7, Home: "/", Groups: []uint32{7}},
	} {
		u, err := lookupUser(spec)
		if err != nil {
			t.Errorf("%q: %v", spec, err)
		} else if !reflect.DeepEqual(*u, want) {
			t.Errorf("%q: %+v, want %+v", spec, *u, want)
		}
	}
	if _, err := lookupUser("app"); err == nil || !strings.Contains(err.Error(), "unknown user") {
		t.Errorf("a name without passwd: %v", err)
	}
	if _, err := lookupUser("root:wheel"); err == nil || !strings.Contains(err.Error(), "unknown group") {
		t.Errorf("a group name without /etc/group: %v", err)
	}
}
