package org.iomtfhir.hapi;

/** The command line, parsed (see {@link HapiServer} for the flags). */
final class Settings {
	int port = 8080;
	String host = "127.0.0.1";
	String jdbcUrl;
	String dbUser = "";
	String dbPassword = "";
	boolean postgres;
	boolean validateRequests;

	static Settings parse(String[] args) {
		Settings s = new Settings();
		String dataDir = "hapi-data";
		for (int i = 0; i < args.length; i++) {
			String a = args[i];
			switch (a) {
				case "--port" -> s.port = Integer.parseInt(args[++i]);
				case "--data-dir" -> dataDir = args[++i];
				case "--jdbc-url" -> s.jdbcUrl = args[++i];
				case "--db-user" -> s.dbUser = args[++i];
				case "--validate-requests" -> s.validateRequests = true;
				default -> throw new IllegalArgumentException("unknown argument " + a);
			}
		}
		// A password never travels on the command line (it would show in ps): the environment.
		String pw = System.getenv("HAPI_DB_PASSWORD");
		if (pw != null) {
			s.dbPassword = pw;
		}
		if (s.jdbcUrl == null) {
			s.jdbcUrl = "jdbc:h2:file:" + new java.io.File(dataDir, "h2").getAbsolutePath();
		}
		s.postgres = s.jdbcUrl.startsWith("jdbc:postgresql:");
		return s;
	}
}
