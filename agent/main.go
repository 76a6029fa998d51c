// Command nullspace-agent is the in-guest agent of nullspace sandboxes.
//
//	nullspace-agent init                        PID 1 after switch_root
//	nullspace-agent serve [--listen unix:PATH]  the protocol server
//	nullspace-agent version                     print the version
//
// The protocol is specified in spec/agent.json.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func usage() {
	fmt.Fprintf(os.Stderr, "usage: nullspace-agent init | serve [--listen unix:PATH] | version\n")
}

func main() {
	args := os.Args[1:]
	if os.Getpid() == 1 {
		// As PID 1 always be init, whatever arguments the kernel passed:
		// exiting would panic the kernel.
		runInit()
	}
	if len(args) == 0 {
		usage()
		os.Exit(2)
	}
	switch args[0] {
	case "init":
		runInit()
	case "serve":
		os.Exit(runServe(args[1:]))
	case "version", "--version", "-v":
		fmt.Println(version)
	default:
		usage()
		os.Exit(2)
	}
}

func runServe(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", "", "serve on unix:PATH instead of the virtio port (for tests)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	logger := log.New(os.Stderr, "nullspace-agent serve: ", 0)
	// Exit on these signals (init restarts serve). Catching them also
	// matters for the processes we start: a disposition inherited as
	// ignored (e.g. SIGINT of a shell's background job) would otherwise be
	// passed on to every process, while a caught one is reset on exec.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGHUP, syscall.SIGTERM)
	go func() {
		s := <-sigs
		logger.Printf("exiting on %v", s)
		if strings.HasPrefix(*listen, "unix:") {
			os.Remove(strings.TrimPrefix(*listen, "unix:"))
		}
		os.Exit(0)
	}()
	a := NewAgent(version, logger)
	var err error
	switch {
	case *listen == "":
		if perr := protectFromOOM(); perr != nil {
			logger.Printf("OOM protection: %v", perr)
		}
		err = serveVirtio(a)
	case strings.HasPrefix(*listen, "unix:"):
		err = serveUnix(a, strings.TrimPrefix(*listen, "unix:"))
	default:
		logger.Printf("unsupported --listen %q (want unix:PATH)", *listen)
		return 2
	}
	if err != nil {
		logger.Printf("%v", err)
		return 1
	}
	return 0
}
