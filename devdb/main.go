// mailcell-devdb: the development database for mailcell.
// Embeds FerretDB v1 (MongoDB wire protocol) with its SQLite backend, so that
// `make run` and the tests need no MongoDB server. Production uses real MongoDB.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on (HOST:PORT)")
	dir := flag.String("dir", "", "directory that holds the SQLite data files")
	flag.Parse()
	if *dir == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: mailcell-devdb --listen HOST:PORT --dir DIR")
		os.Exit(2)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		log.Fatalf("mailcell-devdb: %s: %v", *dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		log.Fatalf("mailcell-devdb: cannot create %s: %v", abs, err)
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: *listen},
		Handler:  "sqlite",
		SQLiteURL: "file:" + abs + "/",
	})
	if err != nil {
		log.Fatalf("mailcell-devdb: %v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	log.Printf("mailcell-devdb: listening on %s, data in %s", *listen, abs)
	if err := f.Run(ctx); err != nil && ctx.Err() == nil {
		log.Fatalf("mailcell-devdb: %v", err)
	}
	log.Printf("mailcell-devdb: stopped")
}
