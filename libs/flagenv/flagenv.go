// Package flagenv lets every command-line flag also be set from the environment,
// so the same binary is configured by flags in development and by environment
// variables in a Kubernetes Deployment.
package flagenv

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// EnvName returns the environment variable that sets a flag: the prefix, then the
// flag name in upper case with dashes and dots turned into underscores.
// EnvName("FEDSYNC", "kafka.brokers") is "FEDSYNC_KAFKA_BROKERS".
func EnvName(prefix, flagName string) string {
	name := strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
	return prefix + "_" + name
}

// Parse parses args into fs and then sets every flag that was not given on the
// command line from its environment variable, if that is set. Flags win over the
// environment.
func Parse(fs *flag.FlagSet, prefix string, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] {
			return
		}
		env := EnvName(prefix, f.Name)
		if v, ok := os.LookupEnv(env); ok {
			if setErr := fs.Set(f.Name, v); setErr != nil {
				err = fmt.Errorf("environment variable %s: %w", env, setErr)
			}
		}
	})
	return err
}

// StringList is a flag.Value holding a comma-separated list.
type StringList []string

// String returns the list joined by commas.
func (l *StringList) String() string { return strings.Join(*l, ",") }

// Set replaces the list with the comma-separated values of s.
func (l *StringList) Set(s string) error {
	*l = nil
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l = append(*l, part)
		}
	}
	return nil
}
