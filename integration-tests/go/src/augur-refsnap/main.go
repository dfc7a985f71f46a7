// augur-refsnap is the REFERENCE snapshotter of the Augur benchmarks and
// conformance runs: containerd 1.6's own overlayfs snapshotter
// (snapshots/overlay) wrapped by contrib/snapshotservice and served over gRPC
// on a unix socket, i.e. exactly what a containerd proxy_plugins entry of type
// "snapshot" expects.
//
// Usage:
//
//	augur-refsnap --root DIR --address SOCK
//
// A stale socket at SOCK is removed first. SIGTERM or SIGINT stops the server
// gracefully (in-flight calls finish) and the process exits 0.
//
// Built offline in GOPATH mode against Debian's containerd 1.6 sources, see
// integration-tests/scripts/go-build.sh.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/log"
	"github.com/containerd/containerd/snapshots/overlay"
	"google.golang.org/grpc"
)

func main() {
	root := flag.String("root", "", "state directory of the overlay snapshotter (required)")
	address := flag.String("address", "", "unix socket to serve the snapshots gRPC API on (required)")
	flag.Parse()
	if *root == "" || *address == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: augur-refsnap --root DIR --address SOCK")
		os.Exit(2)
	}
	if err := run(*root, *address); err != nil {
		log.L.WithError(err).Error("augur-refsnap failed")
		os.Exit(1)
	}
}

func run(root, address string) error {
	// AsynchronousRemove, as containerd 1.6 registers its built-in overlayfs plugin
	// (snapshots/overlay/plugin/plugin.go): Remove drops the record, Cleanup deletes.
	sn, err := overlay.NewSnapshotter(root, overlay.AsynchronousRemove)
	if err != nil {
		return fmt.Errorf("overlay snapshotter at %s: %w", root, err)
	}
	defer sn.Close()

	if err := os.MkdirAll(filepath.Dir(address), 0o755); err != nil {
		return err
	}
	if err := os.Remove(address); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("removing stale socket: %w", err)
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return err
	}

	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-sigs
		log.L.Infof("augur-refsnap: %v received, stopping", s)
		srv.GracefulStop()
	}()

	log.L.Infof("augur-refsnap: serving overlay snapshotter (root %s) on %s", root, address)
	err = srv.Serve(l) // returns nil after GracefulStop
	os.Remove(address)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	log.L.Info("augur-refsnap: stopped")
	return nil
}
