package org.iomtfhir.hapi;

import ca.uhn.fhir.rest.server.RestfulServer;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;

/**
 * HAPI FHIR JPA server (R4) on http://127.0.0.1:PORT/fhir, in the foreground until killed.
 *
 * Flags: --port P, --data-dir DIR (H2 on disk under DIR, the default), --jdbc-url URL and
 * --db-user U (PostgreSQL; password from HAPI_DB_PASSWORD), --validate-requests (refuse any
 * resource with a validation error, 422). Prints "ready in N s" on stderr once it serves.
 */
public final class HapiServer {
	private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(HapiServer.class);

	public static void main(String[] args) throws Exception {
		long start = System.nanoTime();
		ServerConfig.settings = Settings.parse(args);
		Settings s = ServerConfig.settings;
		AnnotationConfigApplicationContext spring = new AnnotationConfigApplicationContext(ServerConfig.class);
		RestfulServer fhir = spring.getBean(RestfulServer.class);

		Server jetty = new Server();
		ServerConnector http = new ServerConnector(jetty);
		http.setHost(s.host);
		http.setPort(s.port);
		jetty.addConnector(http);
		ServletContextHandler handler = new ServletContextHandler();
		handler.setContextPath("/");
		ServletHolder holder = new ServletHolder(fhir);
		holder.setInitOrder(1);
		handler.addServlet(holder, "/fhir/*");
		jetty.setHandler(handler);
		Runtime.getRuntime().addShutdownHook(new Thread(() -> {
			try {
				jetty.stop();
			} catch (Exception e) {
				LOG.warn("stopping Jetty: {}", e.toString());
			}
			spring.close();
		}));
		jetty.start();
		LOG.info("HAPI FHIR JPA server ready in {} s on http://{}:{}/fhir ({}{})",
				String.format("%.1f", (System.nanoTime() - start) / 1e9), s.host, s.port,
				s.postgres ? "PostgreSQL" : "H2 on disk", s.validateRequests ? ", validating requests" : "");
		jetty.join();
	}
}
