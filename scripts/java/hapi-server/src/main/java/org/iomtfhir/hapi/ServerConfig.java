package org.iomtfhir.hapi;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.binary.api.IBinaryStorageSvc;
import ca.uhn.fhir.jpa.binstore.DatabaseBinaryContentStorageSvcImpl;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirPostgresDialect;
import ca.uhn.fhir.jpa.provider.IJpaSystemProvider;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.jpa.subscription.submit.config.SubscriptionSubmitterConfig;
import ca.uhn.fhir.rest.server.IncomingRequestAddressStrategy;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import jakarta.persistence.EntityManagerFactory;
import org.apache.commons.dbcp2.BasicDataSource;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;
import org.springframework.transaction.annotation.EnableTransactionManagement;

import javax.sql.DataSource;
import java.util.Properties;

/**
 * The JPA server's Spring configuration: HAPI's own R4 configuration (JpaR4Config, HapiJpaConfig,
 * batch jobs and the subscription plumbing that the DAOs expect) plus what an application must
 * supply itself: the database, the entity manager, the storage settings and the servlet.
 *
 * Why so few settings: the point is a server that behaves like the HAPI servers hospitals run,
 * so HAPI's defaults stay (referential integrity on write and delete, versioning and history,
 * ALPHANUMERIC client ids, transactions that roll back, paging with next links).
 */
@Configuration
@EnableTransactionManagement
@Import({JpaR4Config.class, HapiJpaConfig.class, JpaBatch2Config.class, Batch2JobsConfig.class,
		SubscriptionSubmitterConfig.class, SubscriptionChannelConfig.class,
		ThreadPoolFactoryConfig.class})
public class ServerConfig {

	/** What the command line chose (set by {@link HapiServer#main} before the context starts). */
	static Settings settings;

	@Bean
	public DataSource dataSource() {
		BasicDataSource ds = new BasicDataSource();
		ds.setUrl(settings.jdbcUrl);
		ds.setUsername(settings.dbUser);
		ds.setPassword(settings.dbPassword);
		ds.setMaxTotal(settings.postgres ? 20 : 10);
		ds.setMaxWait(java.time.Duration.ofSeconds(30));
		return ds;
	}

	@Bean
	public JpaStorageSettings storageSettings() {
		JpaStorageSettings s = new JpaStorageSettings();
		// Deleting by expunge is how a test empties the server; everything else is HAPI's default.
		s.setExpungeEnabled(true);
		s.setAllowMultipleDelete(true);
		return s;
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings();
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		return new SubscriptionSettings();
	}

	@Bean
	@Primary
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			ConfigurableListableBeanFactory beanFactory, FhirContext fhirContext, JpaStorageSettings storage) {
		LocalContainerEntityManagerFactoryBean emf =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storage);
		emf.setPersistenceUnitName("HAPI_PU");
		emf.setDataSource(dataSource());
		Properties p = new Properties();
		p.put("hibernate.dialect", settings.postgres
				? HapiFhirPostgresDialect.class.getName() : HapiFhirH2Dialect.class.getName());
		p.put("hibernate.hbm2ddl.auto", "update");
		p.put("hibernate.format_sql", "false");
		p.put("hibernate.show_sql", "false");
		p.put("hibernate.search.enabled", "false");
		p.put("hibernate.jdbc.batch_size", "20");
		p.put("hibernate.cache.use_query_cache", "false");
		p.put("hibernate.cache.use_second_level_cache", "false");
		emf.setJpaProperties(p);
		return emf;
	}

	@Bean
	@Primary
	public JpaTransactionManager transactionManager(EntityManagerFactory emf) {
		JpaTransactionManager tm = new JpaTransactionManager();
		tm.setEntityManagerFactory(emf);
		return tm;
	}

	@Bean
	public IBinaryStorageSvc binaryStorageSvc() {
		return new DatabaseBinaryContentStorageSvcImpl();
	}

	@Bean
	public RestfulServer restfulServer(IFhirSystemDao<?, ?> systemDao, ResourceProviderFactory providers,
			IJpaSystemProvider systemProvider, JpaStorageSettings storage, ISearchParamRegistry searchParams,
			IValidationSupport validationSupport, DatabaseBackedPagingProvider paging) {
		FhirContext ctx = systemDao.getContext();
		RestfulServer server = new RestfulServer(ctx);
		server.registerProviders(providers.createProviders());
		server.registerProvider(systemProvider);
		JpaCapabilityStatementProvider cap =
				new JpaCapabilityStatementProvider(server, systemDao, storage, searchParams, validationSupport);
		cap.setImplementationDescription("HAPI FHIR JPA server (iomt-fhir test server)");
		server.setServerConformanceProvider(cap);
		server.setPagingProvider(paging);
		server.setServerAddressStrategy(new IncomingRequestAddressStrategy());
		if (settings.validateRequests) {
			// Refuses (422) any request whose resource has a validation error: the tests' proof
			// that every Observation the pipeline writes is valid FHIR R4.
			FhirInstanceValidator validator = new FhirInstanceValidator(validationSupport);
			RequestValidatingInterceptor rv = new RequestValidatingInterceptor();
			rv.addValidatorModule(validator);
			rv.setFailOnSeverity(ResultSeverityEnum.ERROR);
			rv.setAddResponseHeaderOnSeverity(null);
			server.registerInterceptor(rv);
		}
		return server;
	}
}
