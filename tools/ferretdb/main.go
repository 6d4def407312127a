// Command ferretdb runs an embedded FerretDB (MongoDB wire protocol) on SQLite for the local aigw mesh.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen-addr", "", "TCP address to listen on (empty: no TCP listener)")
	listenUnix := flag.String("listen-unix", "", "Unix socket to listen on; its directory is made private (0700)")
	sqliteURL := flag.String("sqlite-url", "file:data/", "SQLite data directory as a file: URL (must end with /)")
	logLevel := flag.String("log-level", "info", "log level: debug, info, warn, error")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "bad -log-level %q: %v\n", *logLevel, err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if *listen == "" && *listenUnix == "" {
		logger.Error("one of -listen-addr and -listen-unix is required")
		os.Exit(2)
	}

	// Directories made from here on (the socket's) are the owner's alone.
	syscall.Umask(0o077)
	if *listenUnix != "" {
		if err := prepareSocket(*listenUnix); err != nil {
			logger.Error("cannot use the Unix socket", "path", *listenUnix, "error", err)
			os.Exit(1)
		}
	}

	// From here on FerretDB creates only files (SQLite's, the socket), no directory: 0600, the owner's alone.
	syscall.Umask(0o177)

	// Telemetry is disabled and locked by the embedded package itself.
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen, Unix: *listenUnix},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: *sqliteURL,
	})
	if err != nil {
		logger.Error("failed to start FerretDB", "error", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	logger.Info("FerretDB listening", "addr", *listen, "unix", *listenUnix, "sqlite_url", *sqliteURL)
	if err := f.Run(ctx); err != nil {
		logger.Error("FerretDB stopped with error", "error", err)
		os.Exit(1)
	}
	logger.Info("FerretDB stopped")
}

// prepareSocket makes the socket's directory private to this user (creating it 0700, refusing one
// that another user owns or that is a symbolic link) and removes a socket a killed run left behind.
func prepareSocket(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	info, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !info.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("%s belongs to another user", dir)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	old, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if old.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return fmt.Errorf("%s is in use by another FerretDB", path)
	}
	return os.Remove(path)
}
