"""One module per CNI plugin type; each exposes PLUGIN (a PluginSpec) and main()."""
