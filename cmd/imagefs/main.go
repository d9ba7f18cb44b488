// Command imagefs mounts the local container image store (containers/storage,
// as podman uses it) as a FUSE file system. See README.md and docs/CLI.md.
package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	"go.podman.io/storage/pkg/reexec"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// containers/storage re-executes this binary for some layer operations
	// (chrootarchive); that must be handled before anything else.
	if reexec.Init() {
		return
	}
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "imagefs: %s\n", oneLine(err.Error()))
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "imagefs",
		Short: "Mount the local container image store as a file system",
		Long: `imagefs mounts the local container image store (containers/storage, as
podman uses it) as a FUSE file system: every image is a directory with its
manifest, config, inspect.json, layer chain and rootfs; names/, digests/ and
layers/ lead to the same images. See docs/LAYOUT.md for the tree.`,
		Version:       version,
		SilenceErrors: true, // main prints the one line
		SilenceUsage:  true,
		// No "completion" command: imagefs is not a tool one types much.
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.SetVersionTemplate("imagefs {{.Version}}\n")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w (see %s --help)", err, c.CommandPath())
	})
	root.AddCommand(newMountCmd(), newUmountCmd(), newVersionCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of imagefs and of the libraries it was built with",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			w := c.OutOrStdout()
			fmt.Fprintf(w, "imagefs %s\n", version)
			bi, ok := debug.ReadBuildInfo()
			if !ok {
				return nil
			}
			fmt.Fprintf(w, "go %s\n", strings.TrimPrefix(bi.GoVersion, "go"))
			for _, d := range bi.Deps {
				switch d.Path {
				case "go.podman.io/storage", "go.podman.io/image/v5", "github.com/hanwen/go-fuse/v2":
					fmt.Fprintf(w, "%s %s\n", d.Path, d.Version)
				}
			}
			return nil
		},
	}
}

// oneLine flattens a message to one line (library errors may hold newlines).
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
