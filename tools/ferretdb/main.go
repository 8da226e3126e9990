// Command ferretdb-embedded runs FerretDB (the real MongoDB-compatible server,
// github.com/FerretDB/FerretDB, pinned in go.mod) with its SQLite handler.
//
// Why a wrapper: `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2`
// builds, but the binary panics at start ("Invalid build/version/version.txt
// file content") because the module as published lacks the generated
// version.txt. FerretDB's own embeddable package (github.com/FerretDB/FerretDB/ferretdb)
// skips that check, so this program runs the same server code through it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:0", "TCP listen address (port 0: the OS picks one; read it from stdout)")
	sqliteURL := flag.String("sqlite-url", "file:data/", "SQLite URI (a directory, ending in /)")
	logLevel := flag.String("log-level", "warn", "debug | info | warn | error")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "bad --log-level: %v\n", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: *sqliteURL,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: %v\n", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// ferretdb.New has already bound the listener (clientconn.Listen): MongoDBURI
	// reads its real address, so --listen-addr=127.0.0.1:0 is race-free for the
	// caller, who reads the port from this one stdout line.
	uri, err := url.Parse(f.MongoDBURI())
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: cannot read the listener address: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", uri.Host)
	fmt.Fprintf(os.Stderr, "ferretdb %s listening on %s (sqlite %s)\n", "v1.24.2", uri.Host, *sqliteURL)
	if err := f.Run(ctx); err != nil && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "ferretdb: %v\n", err)
		os.Exit(1)
	}
}
