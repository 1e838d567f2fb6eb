import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationOptions;
import ca.uhn.fhir.validation.ValidationResult;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;

/**
 * Validates FHIR R4 resources against named profiles with HAPI FHIR's validator, offline.
 *
 * <p>Why one process for many resources: building the validator (loading and snapshotting the
 * R4 core definitions) takes seconds, validating one Observation milliseconds; the tests send
 * every pack Observation through one run.
 *
 * <p>stdin, one resource a line: {@code NAME <TAB> PROFILE[,PROFILE...] <TAB> RESOURCE-JSON}
 * (an empty profile list validates against the base resource only).
 * stdout, per resource: one {@code ISSUE <TAB> NAME <TAB> SEVERITY <TAB> LOCATION <TAB> MESSAGE}
 * line per message (tabs and line breaks in them become spaces), then
 * {@code DONE <TAB> NAME <TAB> ERROR-COUNT} (errors and fatals). A line that is not of that shape
 * gives {@code DONE <TAB> NAME <TAB> -1}. Exit status 0 unless the input could not be read.
 *
 * <p>Offline: no terminology server. Codes of systems the validator does not hold (LOINC) are
 * checked against the profiles' fixed patterns and enumerated value sets only; UCUM codes are
 * checked by HAPI's built-in UCUM service. A profile it does not know is an error.
 */
public final class ValidateProfiles {
  private ValidateProfiles() {}

  public static void main(String[] args) throws Exception {
    FhirContext ctx = FhirContext.forR4();
    ValidationSupportChain chain = new ValidationSupportChain(
        new DefaultProfileValidationSupport(ctx),
        new CommonCodeSystemsTerminologyService(ctx),
        new InMemoryTerminologyServerValidationSupport(ctx),
        new SnapshotGeneratingValidationSupport(ctx));
    FhirInstanceValidator module = new FhirInstanceValidator(chain);
    module.setErrorForUnknownProfiles(true);
    module.setAnyExtensionsAllowed(true);
    FhirValidator validator = ctx.newValidator().registerValidatorModule(module);

    PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    String line;
    while ((line = in.readLine()) != null) {
      if (line.isBlank()) {
        continue;
      }
      String[] parts = line.split("\t", 3);
      if (parts.length != 3) {
        out.println("DONE\t" + clean(parts[0]) + "\t-1");
        continue;
      }
      ValidationOptions options = new ValidationOptions();
      for (String profile : parts[1].split(",")) {
        if (!profile.isBlank()) {
          options.addProfile(profile.trim());
        }
      }
      int errors = 0;
      ValidationResult result = validator.validateWithResult(parts[2], options);
      for (SingleValidationMessage m : result.getMessages()) {
        ResultSeverityEnum sev = m.getSeverity();
        if (sev == ResultSeverityEnum.ERROR || sev == ResultSeverityEnum.FATAL) {
          errors++;
        }
        out.println("ISSUE\t" + clean(parts[0]) + "\t" + sev.getCode() + "\t"
            + clean(m.getLocationString()) + "\t" + clean(m.getMessage()));
      }
      out.println("DONE\t" + clean(parts[0]) + "\t" + errors);
    }
  }

  private static String clean(String s) {
    return s == null ? "" : s.replace('\t', ' ').replace('\n', ' ').replace('\r', ' ');
  }
}
