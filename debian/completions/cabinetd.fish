# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_cabinetd_global_optspecs
    string join \n h/help V/version
end

function __fish_cabinetd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_cabinetd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_cabinetd_using_subcommand
    set -l cmd (__fish_cabinetd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c cabinetd -n "__fish_cabinetd_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cabinetd -n "__fish_cabinetd_needs_command" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_needs_command" -f -a "run" -d 'Run the daemon'
complete -c cabinetd -n "__fish_cabinetd_needs_command" -f -a "check-config" -d 'Validate the configuration without starting anything; prints every error as FILE:LINE:COL'
complete -c cabinetd -n "__fish_cabinetd_needs_command" -f -a "plan" -d 'Print the lighting plan of the night that starts on DATE, as JSON lines'
complete -c cabinetd -n "__fish_cabinetd_needs_command" -f -a "simulate" -d 'Run the rules, scenes and programme against an input timeline, with no device'
complete -c cabinetd -n "__fish_cabinetd_needs_command" -f -a "dali" -d 'DALI tools for the technician at the cabinet'
complete -c cabinetd -n "__fish_cabinetd_needs_command" -f -a "onvif" -d 'ONVIF tools'
complete -c cabinetd -n "__fish_cabinetd_needs_command" -f -a "status" -d 'Ask the running daemon for its status and print it for a person'
complete -c cabinetd -n "__fish_cabinetd_needs_command" -f -a "key" -d 'Ed25519 signing keys of the central post / ops'
complete -c cabinetd -n "__fish_cabinetd_needs_command" -f -a "sign" -d 'Sign a command or desired-config JSON read on stdin; prints the JWS (docs/protocol.md, "Signed messages")'
complete -c cabinetd -n "__fish_cabinetd_needs_command" -f -a "ctl" -d 'Ops tool: send a signed command and wait for its result; list the fleet'
complete -c cabinetd -n "__fish_cabinetd_needs_command" -f -a "man" -d 'Write the man pages (cabinetd.1, cabinetd-SUBCOMMAND.1, …) into DIR'
complete -c cabinetd -n "__fish_cabinetd_needs_command" -f -a "completions" -d 'Print the completion script of SHELL on stdout'
complete -c cabinetd -n "__fish_cabinetd_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand run" -l config -d 'Configuration file; several merge in order, later keys win' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand run" -l config-dir -d 'Directory of drop-in files (`*.toml`, in name order) merged after the files' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand run" -l log-format -d 'Log line format (overrides `[log] format`)' -r -f -a "plain\t''
json\t''"
complete -c cabinetd -n "__fish_cabinetd_using_subcommand run" -s h -l help -d 'Print help'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand run" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand check-config" -l config -d 'Configuration file; several merge in order, later keys win' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand check-config" -l config-dir -d 'Directory of drop-in files (`*.toml`, in name order) merged after the files' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand check-config" -l as-user -d 'Check the files, serial lines and state directory the configuration names as this user (default: as root, the service user `cabinetd` when it exists; else yourself)' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand check-config" -l no-file-checks -d 'Check the configuration alone, not the files it names (a configuration written for another machine)'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand check-config" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand check-config" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand plan" -l config -d 'Configuration file; several merge in order, later keys win' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand plan" -l config-dir -d 'Directory of drop-in files (`*.toml`, in name order) merged after the files' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand plan" -l date -d 'The date the night starts on, YYYY-MM-DD (local date in cabinet.timezone, 1800-01-01 to 2100-12-31)' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand plan" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand plan" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand simulate" -l config -d 'Configuration file; several merge in order, later keys win' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand simulate" -l config-dir -d 'Directory of drop-in files (`*.toml`, in name order) merged after the files' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand simulate" -l from -d 'Start of the simulation, RFC 3339' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand simulate" -l to -d 'End of the simulation, RFC 3339' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand simulate" -l inputs -d 'Input timeline: JSON lines or CSV of point values and uplink up/down' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand simulate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand simulate" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand dali; and not __fish_seen_subcommand_from commission help" -s h -l help -d 'Print help'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand dali; and not __fish_seen_subcommand_from commission help" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand dali; and not __fish_seen_subcommand_from commission help" -f -a "commission" -d 'Give short addresses to the gear of a bus (random-address binary search), with progress. Refuses while the daemon holds the bus: stop cabinetd first'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand dali; and not __fish_seen_subcommand_from commission help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand dali; and __fish_seen_subcommand_from commission" -l config -d 'Configuration file; several merge in order, later keys win' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand dali; and __fish_seen_subcommand_from commission" -l config-dir -d 'Directory of drop-in files (`*.toml`, in name order) merged after the files' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand dali; and __fish_seen_subcommand_from commission" -l bus -d 'The `[[dali]]` bus to commission' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand dali; and __fish_seen_subcommand_from commission" -l all -d 'Readdress every gear (all short addresses are deleted and given again)'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand dali; and __fish_seen_subcommand_from commission" -l unaddressed -d 'Only gear without a short address (the default)'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand dali; and __fish_seen_subcommand_from commission" -s h -l help -d 'Print help'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand dali; and __fish_seen_subcommand_from commission" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand dali; and __fish_seen_subcommand_from help" -f -a "commission" -d 'Give short addresses to the gear of a bus (random-address binary search), with progress. Refuses while the daemon holds the bus: stop cabinetd first'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand dali; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand onvif; and not __fish_seen_subcommand_from discover help" -s h -l help -d 'Print help'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand onvif; and not __fish_seen_subcommand_from discover help" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand onvif; and not __fish_seen_subcommand_from discover help" -f -a "discover" -d 'WS-Discovery: probe 239.255.255.250:3702 (tds:Device and dn:NetworkVideoTransmitter) and print one line per answering device: address, types, scopes. Lists only: cameras are supervised when configured in [[camera]]'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand onvif; and not __fish_seen_subcommand_from discover help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand onvif; and __fish_seen_subcommand_from discover" -l interface -d 'Send the Probe out of this interface: a name (eth1) or its IPv4 address' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand onvif; and __fish_seen_subcommand_from discover" -l timeout -d 'How long answers are collected (at most 60s)' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand onvif; and __fish_seen_subcommand_from discover" -s h -l help -d 'Print help'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand onvif; and __fish_seen_subcommand_from discover" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand onvif; and __fish_seen_subcommand_from help" -f -a "discover" -d 'WS-Discovery: probe 239.255.255.250:3702 (tds:Device and dn:NetworkVideoTransmitter) and print one line per answering device: address, types, scopes. Lists only: cameras are supervised when configured in [[camera]]'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand onvif; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand status" -l http -d 'Address of the daemon\'s HTTP endpoint' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand status" -l json -d 'Print the raw JSON document instead'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand status" -s h -l help -d 'Print help'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand status" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand key; and not __fish_seen_subcommand_from generate help" -s h -l help -d 'Print help'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand key; and not __fish_seen_subcommand_from generate help" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand key; and not __fish_seen_subcommand_from generate help" -f -a "generate" -d 'Write a new Ed25519 private key (PKCS#8 PEM, mode 0600) and print the `[[security.trusted_key]]` text of its public key'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand key; and not __fish_seen_subcommand_from generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand key; and __fish_seen_subcommand_from generate" -l out -d 'The private key file to create (refused if it exists)' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand key; and __fish_seen_subcommand_from generate" -l kid -d 'Key id for the printed config text (default: the file name without extension)' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand key; and __fish_seen_subcommand_from generate" -s h -l help -d 'Print help'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand key; and __fish_seen_subcommand_from generate" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand key; and __fish_seen_subcommand_from help" -f -a "generate" -d 'Write a new Ed25519 private key (PKCS#8 PEM, mode 0600) and print the `[[security.trusted_key]]` text of its public key'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand key; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand sign" -l key -d 'Private key file (PKCS#8 PEM, from `cabinetd key generate` or OpenSSL)' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand sign" -l kid -d 'Key id: the `kid` of the cabinets\' `[[security.trusted_key]]`' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand sign" -l cabinet -d 'Cabinet id (or `all` for P/all/cmd), when the JSON has no `cabinet`' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand sign" -l expires -d 'Validity from issued_at, when the JSON has no `expires_at` (e.g. `10min`)' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand sign" -s h -l help -d 'Print help'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand sign" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and not __fish_seen_subcommand_from send fleet help" -l broker -d 'Broker URL, mqtt://host[:port] or mqtts://host[:port]' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and not __fish_seen_subcommand_from send fleet help" -l ca -d 'PEM CA bundle of the broker\'s certificate (mqtts)' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and not __fish_seen_subcommand_from send fleet help" -l cert -d 'PEM client certificate (mTLS), with --key' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and not __fish_seen_subcommand_from send fleet help" -l key -l tls-key -d 'PEM private key of --cert (given before the subcommand; `send --key` is the signing key)' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and not __fish_seen_subcommand_from send fleet help" -l username -d 'MQTT user name' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and not __fish_seen_subcommand_from send fleet help" -l password-file -d 'File holding the MQTT password' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and not __fish_seen_subcommand_from send fleet help" -l prefix -d 'Topic prefix P' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and not __fish_seen_subcommand_from send fleet help" -s h -l help -d 'Print help'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and not __fish_seen_subcommand_from send fleet help" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and not __fish_seen_subcommand_from send fleet help" -f -a "send" -d 'Publish a signed command on P/CABINET/cmd (P/all/cmd for `all`) and wait for its result'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and not __fish_seen_subcommand_from send fleet help" -f -a "fleet" -d 'List every cabinet from its retained P/C/status: online, mode, version, config version, last seen'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and not __fish_seen_subcommand_from send fleet help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and __fish_seen_subcommand_from send" -l args -d 'Arguments, a JSON object' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and __fish_seen_subcommand_from send" -l key -d 'Signing key (PKCS#8 PEM)' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and __fish_seen_subcommand_from send" -l kid -d 'Its key id' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and __fish_seen_subcommand_from send" -l id -d 'Command id (default: a fresh `ctl-UUID`)' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and __fish_seen_subcommand_from send" -l expires -d 'Validity of the command (its expires_at)' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and __fish_seen_subcommand_from send" -l timeout -d 'How long to wait for the result' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and __fish_seen_subcommand_from send" -s h -l help -d 'Print help'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and __fish_seen_subcommand_from send" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and __fish_seen_subcommand_from fleet" -l wait -d 'Longest time to collect the statuses' -r
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and __fish_seen_subcommand_from fleet" -l json -d 'Print a JSON array instead of a table'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and __fish_seen_subcommand_from fleet" -s h -l help -d 'Print help'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and __fish_seen_subcommand_from fleet" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "send" -d 'Publish a signed command on P/CABINET/cmd (P/all/cmd for `all`) and wait for its result'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "fleet" -d 'List every cabinet from its retained P/C/status: online, mode, version, config version, last seen'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand man" -l out -d 'Directory to write the pages into (created if missing)' -r -F
complete -c cabinetd -n "__fish_cabinetd_using_subcommand man" -s h -l help -d 'Print help'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand man" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand completions" -s h -l help -d 'Print help'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand completions" -s V -l version -d 'Print version'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and not __fish_seen_subcommand_from run check-config plan simulate dali onvif status key sign ctl man completions help" -f -a "run" -d 'Run the daemon'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and not __fish_seen_subcommand_from run check-config plan simulate dali onvif status key sign ctl man completions help" -f -a "check-config" -d 'Validate the configuration without starting anything; prints every error as FILE:LINE:COL'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and not __fish_seen_subcommand_from run check-config plan simulate dali onvif status key sign ctl man completions help" -f -a "plan" -d 'Print the lighting plan of the night that starts on DATE, as JSON lines'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and not __fish_seen_subcommand_from run check-config plan simulate dali onvif status key sign ctl man completions help" -f -a "simulate" -d 'Run the rules, scenes and programme against an input timeline, with no device'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and not __fish_seen_subcommand_from run check-config plan simulate dali onvif status key sign ctl man completions help" -f -a "dali" -d 'DALI tools for the technician at the cabinet'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and not __fish_seen_subcommand_from run check-config plan simulate dali onvif status key sign ctl man completions help" -f -a "onvif" -d 'ONVIF tools'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and not __fish_seen_subcommand_from run check-config plan simulate dali onvif status key sign ctl man completions help" -f -a "status" -d 'Ask the running daemon for its status and print it for a person'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and not __fish_seen_subcommand_from run check-config plan simulate dali onvif status key sign ctl man completions help" -f -a "key" -d 'Ed25519 signing keys of the central post / ops'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and not __fish_seen_subcommand_from run check-config plan simulate dali onvif status key sign ctl man completions help" -f -a "sign" -d 'Sign a command or desired-config JSON read on stdin; prints the JWS (docs/protocol.md, "Signed messages")'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and not __fish_seen_subcommand_from run check-config plan simulate dali onvif status key sign ctl man completions help" -f -a "ctl" -d 'Ops tool: send a signed command and wait for its result; list the fleet'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and not __fish_seen_subcommand_from run check-config plan simulate dali onvif status key sign ctl man completions help" -f -a "man" -d 'Write the man pages (cabinetd.1, cabinetd-SUBCOMMAND.1, …) into DIR'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and not __fish_seen_subcommand_from run check-config plan simulate dali onvif status key sign ctl man completions help" -f -a "completions" -d 'Print the completion script of SHELL on stdout'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and not __fish_seen_subcommand_from run check-config plan simulate dali onvif status key sign ctl man completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and __fish_seen_subcommand_from dali" -f -a "commission" -d 'Give short addresses to the gear of a bus (random-address binary search), with progress. Refuses while the daemon holds the bus: stop cabinetd first'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and __fish_seen_subcommand_from onvif" -f -a "discover" -d 'WS-Discovery: probe 239.255.255.250:3702 (tds:Device and dn:NetworkVideoTransmitter) and print one line per answering device: address, types, scopes. Lists only: cameras are supervised when configured in [[camera]]'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and __fish_seen_subcommand_from key" -f -a "generate" -d 'Write a new Ed25519 private key (PKCS#8 PEM, mode 0600) and print the `[[security.trusted_key]]` text of its public key'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "send" -d 'Publish a signed command on P/CABINET/cmd (P/all/cmd for `all`) and wait for its result'
complete -c cabinetd -n "__fish_cabinetd_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "fleet" -d 'List every cabinet from its retained P/C/status: online, mode, version, config version, last seen'
